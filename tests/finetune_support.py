"""Fixtures and helpers shared by the fine-tuning tests: one dequantised base per test session.

Dequantising the bundled GGUF takes ~20 s, so the pair is prepared once under the session's
temp dir (prepare_base's own cache makes the second request cheap) instead of per test home.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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

    llama = Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, logits_all=True, n_ctx=256, n_threads=2, verbose=False)
    try:
        llama.eval(ids)
        return np.array(llama.scores[: len(ids)], dtype=np.float32)
    finally:
        llama.close()


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the logit range of `b` (the bound the issue asks for)."""
    return float(np.abs(a - b).max() / (b.max() - b.min()))
