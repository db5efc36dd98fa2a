"""A real second model, Gemma 3 270M (gemma3, Q4_K_M, no chat template), through the CLI as a user runs it.

`tunelab[gemma]` installs it; `tunelab models` lists it as gemma3-270m and `--model gemma3-270m`
assembles it on first use. Chat works and prints nothing of llama.cpp's own; `tunelab train`
trains a few steps (it used to die with "tokenizer.chat_template is not set"): training renders
prompts with exactly the tokens llama.cpp serves them with, and the exported adapter, loaded in
plain llama-cpp-python on the Q4_K_M base, moves the logits as it does in transformers + peft on
the dequantised weights. Quantisation noise hides the exact values (see test_export_gguf.py), so
the check is the correlation of the two logit changes over a fixed text: CORRELATION.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fault_support import ok
from finetune_support import SENTENCE, cpp_logits, hf_logits

CORRELATION = 0.9
"""Bound on corr(llama.cpp Δlogits, HF Δlogits); measured on this machine: see docs/benchmarks.md."""
LEAKS = ("llama_context", "llama_kv_cache", "n_ctx_train", "SWA", "llama_model_load", "Traceback", "Error")
"""llama.cpp's own log lines (and raw errors) that must not reach a user's terminal."""


@pytest.fixture(scope="module")
def gemma() -> Path:
    from tunelab.stores.model_files import PACKAGED_MODELS

    packaged = next(p for p in PACKAGED_MODELS if p.name == "gemma3-270m")
    if not packaged.installed():
        pytest.fail(f"the second model is part of the test set-up: {packaged.install}")
    return packaged.locate()


@pytest.mark.heavy
@pytest.mark.slow
def test_gemma3_chats_trains_and_its_adapter_moves_logits_like_peft(gemma: Path, home: Path, tmp_path: Path) -> None:
    from tunelab.config import Settings
    from tunelab.engine.chat_template import ChatMessage, ChatTemplate
    from tunelab.stores.db import connect
    from tunelab.stores.runs import RunStore

    listing = ok("models")
    assert "gemma3-270m" in listing.stdout and "package" in listing.stdout

    chat = ok("chat", "--model", "gemma3-270m", "--temperature", "0", "--max-tokens", "8", "The capital of France is")
    assert chat.stdout.strip()
    assert not [leak for leak in LEAKS if leak in chat.stderr], chat.stderr

    bank = tmp_path / "facts.jsonl"
    pairs = [
        ("What colour is the sky?", "Blue."),
        ("What do bees make?", "Honey."),
        ("Where do fish live?", "In water."),
        ("What do cows drink?", "Water."),
        ("What is ice made of?", "Frozen water."),
        ("What do cats chase?", "Mice."),
    ]
    bank.write_text("".join(json.dumps({"input": q, "output": a}) + "\n" for q, a in pairs), encoding="utf-8")
    ok("bank", "import", "facts", str(bank), "--instruction", "Answer briefly.", "--test-size", "0.2")
    trained = ok(
        "train",
        "g",
        "--bank",
        "facts",
        "--model",
        "gemma3-270m",
        "--max-steps",
        "3",
        "--lr",
        "5e-3",
        "--batch-size",
        "2",
        "--max-length",
        "48",
        timeout=900,
    )
    assert "adapter 'g'" in trained.stdout, trained.stderr
    assert not [leak for leak in LEAKS if leak in trained.stderr], trained.stderr

    conn = connect(Settings.load().db_path)
    try:
        adapter = RunStore(conn).adapter("g")
        run = RunStore(conn).get(str(adapter.run_id))
    finally:
        conn.close()
    hf_dir = Path(run.hf_dir)

    from llama_cpp import Llama

    from tunelab.engine.chat_template import gguf_template
    from tunelab.finetune.base_weights import load_tokenizer

    messages = [ChatMessage("system", "Answer briefly."), ChatMessage("user", "What do bees make?")]
    llama = Llama(model_path=str(gemma), vocab_only=True, verbose=False)
    try:
        served = ChatTemplate(llama).tokens(messages)
    finally:
        llama.close()
    tokenizer = load_tokenizer(hf_dir, gguf_template(gemma))
    rendered = tokenizer.apply_chat_template([m.as_dict() for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True)
    assert list(rendered["input_ids"]) == served  # training formats prompts exactly as llama.cpp serves them
    assert served[0] == tokenizer.bos_token_id  # the fallback template starts with Gemma's BOS

    ids = tokenizer(SENTENCE)["input_ids"]
    cpp_delta = cpp_logits(gemma, ids, Path(adapter.gguf_path)) - cpp_logits(gemma, ids)
    hf_delta = hf_logits(hf_dir, ids, Path(adapter.peft_dir)) - hf_logits(hf_dir, ids)
    correlation = float(np.corrcoef(cpp_delta.ravel(), hf_delta.ravel())[0, 1])
    print(
        f"\ngemma3-270m Q4_K_M: adapter Δlogits max |HF| {np.abs(hf_delta).max():.3f}, "
        f"max |llama.cpp| {np.abs(cpp_delta).max():.3f}, correlation {correlation:.4f}"
    )
    assert np.abs(hf_delta).max() > 0.05  # the adapter really moves the logits
    assert correlation > CORRELATION
