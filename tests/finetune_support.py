"""Fixtures and helpers shared by the fine-tuning tests: one dequantised base per test session.

Dequantising the bundled GGUF takes ~20 s, so the pair is prepared once under the session's
temp dir (prepare_base's own cache makes the second request cheap) instead of per test home.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import THREADS
from llama_cpp_source import TEST_CACHE, extract, llama_cpp_version, sdist

SENTENCE = "The quick brown fox jumps over the lazy dog because it wanted to see"


@pytest.fixture(scope="session")
def base_pair(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path):
    from tunelab.finetune.base_weights import prepare_base
    from tunelab.stores.db import connect

    root = tmp_path_factory.getbasetemp() / "finetune-base"
    conn = connect(root / "base.db")
    try:
        return prepare_base(conn, root / "models", bundled_model)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def f32_base(base_pair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unquantised GGUF written from the HF weights: llama.cpp and HF then share exact weights."""
    from tunelab.finetune.export_gguf import export_model

    path = tmp_path_factory.getbasetemp() / "finetune-base" / "base-f32.gguf"
    if not path.exists():
        export_model(base_pair.hf_dir, base_pair.gguf_path, path, "f32")
    return path


def random_adapter(hf_dir: Path, out: Path, targets: list[str], r: int = 4, seed: int = 0) -> Path:
    """A PEFT LoRA with random A and B (a fresh one has B = 0 and would test nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    return out


def token_ids(hf_dir: Path, text: str = SENTENCE) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_dir)(text)["input_ids"]


def hf_logits(hf_dir: Path, ids: list[int], adapter: Path | None = None) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def cpp_logits(gguf: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    from llama_cpp import Llama

    llama = Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, logits_all=True, n_ctx=256, n_threads=THREADS, verbose=False)
    try:
        llama.eval(ids)
        return np.array(llama.scores[: len(ids)], dtype=np.float32)
    finally:
        llama.close()


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the logit range of `b` (the bound the issue asks for)."""
    return float(np.abs(a - b).max() / (b.max() - b.min()))


def registered_adapter(conn, home: Path, base_pair, name: str = "rand", seed: int = 0) -> Path:  # type: ignore[no-untyped-def]
    """A real GGUF LoRA (random weights from `seed`, no training), registered as adapter `name`;
    returns its PEFT folder (the GGUF is `adapter.gguf` inside)."""
    from tunelab.finetune.export_gguf import export_adapter
    from tunelab.stores.runs import Adapter, RunStore

    peft = random_adapter(base_pair.hf_dir, home / "adapters" / name, ["q_proj", "v_proj"], seed=seed)
    export_adapter(peft, base_pair.gguf_path, peft / "adapter.gguf")
    store = RunStore(conn)
    run_ = store.create(name, base_pair.gguf_path, base_pair.gguf_sha256, base_pair.hf_dir, "", [], {}, home / "runs" / name, "cpu")
    store.add_adapter(Adapter(name, run_.id, "", base_pair.gguf_sha256, str(peft), str(peft / "adapter.gguf")))
    return peft


# --- The architecture matrix: tiny random models, converted by llama.cpp's own converter ---------

QWEN2_VOCAB = "models/ggml-vocab-qwen2.gguf"
"""Qwen2's real tokenizer, from llama.cpp's own tokenizer tests in the same sdist."""
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", QWEN2_VOCAB)
"""What the tests need from the sdist's vendor/llama.cpp/ (the rest is C++)."""


@dataclass(frozen=True)
class HFConverter:
    """llama.cpp's `convert_hf_to_gguf.py` from the llama-cpp-python sdist of the installed version.

    The version matters: the converter and the llama.cpp that loads its output are one release,
    so a GGUF it writes is a GGUF this llama.cpp reads, as a user's would be."""

    root: Path

    @property
    def qwen2_vocab(self) -> Path:
        return self.root / QWEN2_VOCAB

    def convert(self, hf_dir: Path, out: Path, outtype: str = "f32") -> Path:
        """Run the converter as a user would (its own process, its own gguf-py); fail with its last words."""
        done = subprocess.run(
            [sys.executable, str(self.root / "convert_hf_to_gguf.py"), str(hf_dir), "--outfile", str(out), "--outtype", outtype],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if done.returncode != 0:
            pytest.fail(f"convert_hf_to_gguf.py failed on {hf_dir.name}:\n{done.stderr[-3000:]}")
        return out


def llama_cpp_converter(cache: Path = TEST_CACHE) -> HFConverter:
    """The converter, unpacked once from the sdist of the installed llama-cpp-python into `cache`.

    Once cached, nothing here touches the network; when it is not cached and cannot be fetched, the
    test fails with one line that says so (a traceback of pip's would hide why)."""
    from tunelab.stores.files import atomic_dir, file_lock

    version = llama_cpp_version()
    root = cache / f"llama.cpp-converter-{version}"
    with file_lock(cache / f"llama.cpp-converter-{version}.lock"):
        if not all((root / part).exists() for part in CONVERTER_PARTS):
            with atomic_dir(root) as tmp:
                extract(sdist(cache), tmp, CONVERTER_PARTS)
    for module in ("sentencepiece", "safetensors", "torch", "transformers"):  # the converter's own imports
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"convert_hf_to_gguf.py needs {module}: pip install -e '.[test]'")
    return HFConverter(root)


@dataclass(frozen=True)
class TinyArch:
    """One architecture of the matrix: a transformers config small enough to build, convert and train in seconds."""

    name: str
    model_type: str
    config: dict[str, Any]
    tokenizer: str = "smollm"
    """"smollm": the bundled model's byte-level BPE; "qwen2": Qwen2's own (transformers gives every qwen2/qwen3
    checkpoint Qwen2Tokenizer, whose pre-tokenizer only Qwen's vocabulary matches); "spm": a sentencepiece
    model as Gemma has (llama.cpp's gemma2 converter reads nothing else, and transformers rebuilds a Gemma
    GGUF's tokenizer as sentencepiece whatever the file holds)."""


HIDDEN = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    initializer_range=0.1,
)
GEMMA = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=8, tie_word_embeddings=True)
"""A window shorter than the test sentence, so sliding-window layers really slide."""

ARCHS = (
    TinyArch("llama", "llama", {**HIDDEN, "tie_word_embeddings": False}),
    TinyArch("mistral", "mistral", {**HIDDEN, "head_dim": 16, "sliding_window": None, "tie_word_embeddings": False}),
    TinyArch("qwen2", "qwen2", {**HIDDEN, "tie_word_embeddings": True}, tokenizer="qwen2"),  # q/k/v biases by default
    TinyArch("qwen3", "qwen3", {**HIDDEN, "head_dim": 32, "tie_word_embeddings": True}, tokenizer="qwen2"),  # q/k norms
    TinyArch("gemma2", "gemma2", {**HIDDEN, **GEMMA, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}, tokenizer="spm"),
    TinyArch("gemma3", "gemma3_text", {**HIDDEN, **GEMMA, "num_hidden_layers": 6}, tokenizer="spm"),  # 5 sliding layers, then a global one
    TinyArch("phi3", "phi3", {**HIDDEN, "original_max_position_embeddings": 512, "tie_word_embeddings": False}),  # fused qkv / gate_up
)

SPM_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")
"""Gemma's first four ids."""


def bpe_tokenizer_files(source: Path, out: Path, tokenizer_class: str | None = None) -> dict[str, int]:
    """The bundled model's byte-level BPE tokenizer, copied into `out`; its special ids.

    llama.cpp's converter identifies a BPE pre-tokenizer by a hash of its output; this one is
    SmolLM's, which it knows."""
    import json
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    config = json.loads((out / "tokenizer_config.json").read_text())
    if tokenizer_class:
        config["tokenizer_class"] = tokenizer_class
        (out / "tokenizer_config.json").write_text(json.dumps(config))
    vocab = json.loads((out / "tokenizer.json").read_text())
    ids = {**vocab["model"]["vocab"], **{t["content"]: t["id"] for t in vocab["added_tokens"]}}
    return {
        "vocab_size": len(ids),
        "bos_token_id": ids[config["bos_token"]],
        "eos_token_id": ids[config["eos_token"]],
        "pad_token_id": ids[config["pad_token"]],
    }


def spm_tokenizer_files(out: Path, vocab_size: int = 1024) -> dict[str, int]:
    """A small sentencepiece BPE model trained on the bundled chatterbot corpus, shaped like Gemma's
    (pad/eos/bos/unk = 0..3, byte fallback, no dummy prefix, whitespace kept)."""
    import importlib.util
    import json

    import sentencepiece as spm

    corpus = Path(next(iter(importlib.util.find_spec("chatterbot_corpus").submodule_search_locations))) / "data" / "english"
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(corpus.glob("*.yml")))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        minloglevel=2,
        num_threads=1,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": True,
                "add_eos_token": False,
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
            }
        )
    )
    return {"vocab_size": vocab_size, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def gguf_tokenizer_files(vocab_gguf: Path, out: Path) -> dict[str, int]:
    """A real model's tokenizer, rebuilt by transformers from a vocabulary-only GGUF (~30 s for Qwen's
    152k tokens, so kept beside the GGUF after the first time), saved into `out`."""
    import shutil

    from transformers import AutoTokenizer

    from tunelab.stores.files import atomic_dir

    saved = vocab_gguf.with_suffix(".hf")
    if not (saved / "tokenizer_config.json").is_file():
        with atomic_dir(saved) as tmp:
            AutoTokenizer.from_pretrained(vocab_gguf.parent, gguf_file=vocab_gguf.name).save_pretrained(tmp)
    tokenizer = AutoTokenizer.from_pretrained(saved)
    for item in saved.iterdir():
        shutil.copy(item, out / item.name)
    ids = {name: tokenizer.convert_tokens_to_ids(getattr(tokenizer, name)) for name in ("bos_token", "eos_token", "pad_token")}
    return {"vocab_size": len(tokenizer), **{f"{name}_id": i for name, i in ids.items()}}


def tiny_model(arch: TinyArch, tokenizer_source: Path, out: Path, seed: int = 0, qwen2_vocab: Path | None = None) -> Path:
    """A random `arch` checkpoint with a tokenizer, every weight (norms too) random, so no +1 / bias / tie slip can hide."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True)
    # Named GPT2Tokenizer: transformers would otherwise pick the class by model_type (Qwen2Tokenizer
    # rebuilds the pre-tokenizer with Qwen's regex), and llama.cpp's phi3 converter takes a
    # byte-level tokenizer only under that name (as Phi-4's)
    if arch.tokenizer == "spm":
        special = spm_tokenizer_files(out)
    elif arch.tokenizer == "qwen2":
        assert qwen2_vocab is not None, "qwen2 tokenizers come from the llama.cpp sdist (HFConverter.qwen2_vocab)"
        special = gguf_tokenizer_files(qwen2_vocab, out)
    else:
        special = bpe_tokenizer_files(tokenizer_source, out, "GPT2Tokenizer")
    config = AutoConfig.for_model(arch.model_type, **arch.config, **special)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for _name, param in model.named_parameters():
            if param.ndim == 1:  # norms start at 1 (or 0 for Gemma's 1 + w), biases at 0
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(out)
    return out
