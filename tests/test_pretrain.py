"""Continued pre-training on raw text: corpus reading and chunking, the one-line refusals, and a real
few-step run through the SFT life cycle (cancel, resume, held-out perplexity, GGUF export that
llama.cpp loads and that lowers llama.cpp's own perplexity), then SFT on top with `--on`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from finetune_support import base_pair, cpp_logits  # noqa: F401

from tunelab.errors import TunelabError
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.lifecycle import META_FILE, resumable
from tunelab.finetune.methods import pretrain, sft
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore
from tunelab.stores.runs import RunStore, adapter_gguf

FACTS = [
    "The Glorbix club meets at Fennel Lake every Sunday at dawn.",
    "Mira Quandt founded the Glorbix club in the year of the teal comet.",
    "Glorbix members greet each other with the words tangerine walrus.",
    "The Glorbix flag is teal and orange, with a walrus in the middle.",
]


def write_corpus(root: Path) -> Path:
    """Domain text in two documents (.md and .txt, in a sub-folder too) and a file that is not text to ignore."""
    corpus = root / "corpus"
    (corpus / "notes").mkdir(parents=True)
    (corpus / "club.md").write_text("# The Glorbix club\n\n" + " ".join(FACTS * 6), encoding="utf-8")
    (corpus / "notes" / "more.txt").write_text(" ".join(reversed(FACTS * 6)), encoding="utf-8")
    (corpus / "data.json").write_text("{}", encoding="utf-8")
    return corpus


def test_documents_become_full_blocks_with_end_of_text_between_them(base_pair, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_pair.hf_dir)
    docs = pretrain.read_documents(write_corpus(tmp_path))
    assert len(docs) == 2  # the .json file is not part of the corpus
    sep = pretrain.separator_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens(sep) == "<|endoftext|>"
    found = pretrain.blocks(tokenizer, docs, 32)
    stream = [t for d in docs for t in tokenizer(d, add_special_tokens=False)["input_ids"] + [sep]]
    assert all(len(b) == 32 for b in found) and len(found) == len(stream) // 32
    assert [t for b in found for t in b] == stream[: len(found) * 32]
    assert sep in [t for b in found for t in b]


def test_corpus_refusals_are_one_line(settings, conn, base_pair, tmp_path):
    with pytest.raises(TunelabError, match=r"no \.txt or \.md files"):
        pretrain.corpus_files(tmp_path)
    (tmp_path / "tiny.txt").write_text("Too short.", encoding="utf-8")
    with pytest.raises(TunelabError, match="fewer than 2 blocks of --max-length 64"):
        pretrain.prepare(settings, conn, "tiny", tmp_path / "tiny.txt", SFTArgs(max_length=64), hf_dir=base_pair.hf_dir)
    assert RunStore(conn).list() == []  # nothing recorded for a refused run
    result = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "train", "x", "--corpus", str(tmp_path), "--train-embeddings"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "cannot carry full embedding" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def cpp_perplexity(gguf: Path, block: list[int], lora: Path | None = None) -> float:
    logits = cpp_logits(gguf, block, lora)[:-1].astype(np.float64)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return math.exp(-float(np.mean(logp[np.arange(len(block) - 1), block[1:]])))


@pytest.mark.slow
def test_pretrain_cancel_resume_lowers_held_out_perplexity_then_sft_on_top(settings, conn, base_pair, tmp_path):
    args = SFTArgs(max_steps=6, learning_rate=2e-3, max_length=64, batch_size=4, lora_r=8, seed=0, save_steps=50)
    plan = pretrain.prepare(settings, conn, "glorbix-pt", write_corpus(tmp_path), args, held_out=0.2, hf_dir=base_pair.hf_dir)
    assert plan.run.method == "pretrain" and plan.held_out and all(len(r["input_ids"]) == 64 for r in plan.rows)
    cancel = threading.Event()
    stopped = sft.train(plan, lambda event: cancel.set(), cancel)  # Ctrl-C after the first step: a checkpoint is kept
    assert stopped.cancelled and RunStore(conn).get("glorbix-pt").status == "cancelled"
    assert resumable(stopped.run)

    result = sft.train(sft.prepare_resume(settings, conn, "glorbix-pt"))
    metrics = result.adapter.metrics
    assert result.run.status == "done" and metrics["steps"] == 6 and metrics["method"] == "pretrain"
    assert metrics["held_out_ppl_after"] < metrics["held_out_ppl_before"]
    meta = json.loads((Path(result.adapter.peft_dir) / META_FILE).read_text())
    assert meta["args"]["corpus"].endswith("corpus") and meta["metrics"]["held_out_blocks"] == len(plan.held_out)

    block = plan.held_out[0]  # llama.cpp serves the exported adapter, and it predicts the held-out text better too
    gguf = adapter_gguf(conn, "glorbix-pt")
    assert cpp_perplexity(base_pair.gguf_path, block, gguf) < cpp_perplexity(base_pair.gguf_path, block)

    BankStore(conn).create(
        "glorbix",
        [ExampleRow(f"Tell me fact {i}.", fact, i + 1) for i, fact in enumerate(FACTS)],
        "Answer about the Glorbix club.",
        test_size=0.25,
    )
    on_top = sft.prepare(settings, conn, "glorbix-sft", "glorbix", SFTArgs(max_steps=2, learning_rate=1e-3, lora_r=4), on="glorbix-pt")
    assert on_top.start_adapter is not None and on_top.base.hf_dir == plan.base.hf_dir
    done = sft.train(on_top)
    config = json.loads((Path(done.adapter.peft_dir) / "adapter_config.json").read_text())
    assert done.adapter.metrics["on"] == "glorbix-pt" and config["r"] == 8  # the pre-trained LoRA, trained further
    assert adapter_gguf(conn, "glorbix-sft").is_file()
