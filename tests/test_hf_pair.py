"""`--hf-dir` pairing: a user's HF checkpoint beside its GGUF is checked by config, token ids and logits.

The logit check runs both on `LOGITS_TEXT`: the same weights correlate > 0.99 even through the
bundled Q4_1 GGUF, while a checkpoint with other weights behind the same config and tokenizer
(here: the bundled weights with a random LoRA merged in) is refused in one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from finetune_support import base_pair, random_adapter  # noqa: F401

from tunelab.errors import TunelabError
from tunelab.finetune.base_weights import CACHE_MARKER, LOGITS_MIN_CORRELATION, logits_correlation, prepare_base


def user_copy(hf_dir: Path, out: Path) -> Path:
    """`hf_dir` as a user's own checkpoint (no tunelab cache marker; the weights file linked, not copied)."""
    out.mkdir()
    for item in hf_dir.iterdir():
        if item.name == CACHE_MARKER:
            continue
        if item.suffix == ".safetensors":
            (out / item.name).symlink_to(item)
        else:
            shutil.copy(item, out / item.name)
    return out


@pytest.mark.slow
def test_same_weights_pass_and_other_weights_are_refused_by_logits(base_pair, conn, settings, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    same = user_copy(base_pair.hf_dir, tmp_path / "same")
    corr_same = logits_correlation(same, base_pair.gguf_path)
    assert prepare_base(conn, settings.dirs.models, base_pair.gguf_path, same).hf_dir == same.resolve()

    peft_dir = random_adapter(base_pair.hf_dir, tmp_path / "peft", ["q_proj", "v_proj", "down_proj"], r=8)
    model = AutoModelForCausalLM.from_pretrained(base_pair.hf_dir, dtype=torch.float32)
    other = tmp_path / "other"
    PeftModel.from_pretrained(model, peft_dir).merge_and_unload().save_pretrained(other)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(base_pair.hf_dir / name, other / name)
    corr_other = logits_correlation(other, base_pair.gguf_path)
    print(f"\nlogit correlation with the Q4_1 GGUF: same weights {corr_same:.4f}, other weights {corr_other:.4f}")
    assert corr_same > 0.99 and corr_other < LOGITS_MIN_CORRELATION
    with pytest.raises(TunelabError, match="logits disagree") as refused:
        prepare_base(conn, settings.dirs.models, base_pair.gguf_path, other)
    assert "\n" not in str(refused.value)
