"""GGUF export checked against HF+peft logits on the same weights (real transformers and llama.cpp).

Measured here (2026-11-22): on an F32 GGUF of the dequantised weights, max |Δlogit| relative to
the logit range is ~4e-4 without and ~8e-4 with a random all-linear LoRA, argmax identical at
every position; without the q/k permutation the error is ~50x larger. We assert 2e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from finetune_support import base_pair, cpp_logits, f32_base, hf_logits, random_adapter, relative_error, token_ids  # noqa: F401

from tunelab.errors import TunelabError
from tunelab.finetune import export_gguf
from tunelab.stores.model_files import check_adapter_fits

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BOUND = 2e-3


@pytest.fixture(scope="module")
def adapter_case(base_pair, tmp_path_factory: pytest.TempPathFactory):
    """A random all-linear adapter, its HF logits with and without it, and its GGUF export."""
    root = tmp_path_factory.mktemp("adapter")
    peft_dir = random_adapter(base_pair.hf_dir, root / "peft", ALL_LINEAR)
    ids = token_ids(base_pair.hf_dir)
    gguf = export_gguf.export_adapter(peft_dir, base_pair.gguf_path, root / "adapter.gguf")
    return {
        "peft": peft_dir,
        "gguf": gguf,
        "ids": ids,
        "hf_base": hf_logits(base_pair.hf_dir, ids),
        "hf_lora": hf_logits(base_pair.hf_dir, ids, peft_dir),
    }


@pytest.mark.slow
def test_adapter_logits_match_hf_peft_on_unquantised_base(adapter_case, f32_base: Path) -> None:
    base = cpp_logits(f32_base, adapter_case["ids"])
    with_lora = cpp_logits(f32_base, adapter_case["ids"], adapter_case["gguf"])
    assert relative_error(base, adapter_case["hf_base"]) < BOUND
    assert np.abs(adapter_case["hf_lora"] - adapter_case["hf_base"]).max() > 1.0  # the adapter really moves logits
    assert relative_error(with_lora, adapter_case["hf_lora"]) < BOUND
    assert (with_lora.argmax(-1) == adapter_case["hf_lora"].argmax(-1)).all()


@pytest.mark.slow
def test_without_qk_permutation_the_adapter_is_wrong(adapter_case, f32_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_gguf, "PERMUTED_ARCHS", frozenset())
    wrong = export_gguf.export_adapter(adapter_case["peft"], f32_base, tmp_path / "unpermuted.gguf")
    with_lora = cpp_logits(f32_base, adapter_case["ids"], wrong)
    assert relative_error(with_lora, adapter_case["hf_lora"]) > 10 * BOUND


@pytest.mark.slow
def test_adapter_delta_on_quantised_default_base_correlates(adapter_case, base_pair) -> None:
    base = cpp_logits(base_pair.gguf_path, adapter_case["ids"])
    with_lora = cpp_logits(base_pair.gguf_path, adapter_case["ids"], adapter_case["gguf"])
    cpp_delta = (with_lora - base).ravel()
    hf_delta = (adapter_case["hf_lora"] - adapter_case["hf_base"]).ravel()
    correlation = float(np.corrcoef(cpp_delta, hf_delta)[0, 1])
    print(f"Q4_1 base: correlation of adapter logit deltas llama.cpp vs HF = {correlation:.4f}")
    assert correlation > 0.95


@pytest.mark.slow
def test_merged_models_match_hf_merged(adapter_case, base_pair, tmp_path: Path) -> None:
    """f16 keeps the F32 bound's spirit; q8_0 quantises activations too, so it is held to correlation."""
    for tensor_type in ("f16", "q8_0"):
        merged = export_gguf.export_model(
            base_pair.hf_dir, base_pair.gguf_path, tmp_path / f"{tensor_type}.gguf", tensor_type, adapter_case["peft"]
        )
        logits = cpp_logits(merged, adapter_case["ids"])
        hf = adapter_case["hf_lora"]
        correlation = float(np.corrcoef(logits.ravel(), hf.ravel())[0, 1])
        agree = float((logits.argmax(-1) == hf.argmax(-1)).mean())
        print(f"merged {tensor_type}: rel err {relative_error(logits, hf):.2e}, corr {correlation:.5f}, argmax agree {agree:.2f}")
        if tensor_type == "f16":
            assert relative_error(logits, hf) < 5e-3 and agree == 1.0
        else:
            assert correlation > 0.99 and agree >= 0.75


def write_peft(out: Path, tensors: dict[str, np.ndarray], **config: object) -> Path:
    import json

    from safetensors.numpy import save_file

    out.mkdir(parents=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, **config}))
    return out


def lora(module: str, rows: int, cols: int) -> dict[str, np.ndarray]:
    prefix = f"base_model.model.{module}"
    return {f"{prefix}.lora_A.weight": np.ones((4, cols), np.float32), f"{prefix}.lora_B.weight": np.ones((rows, 4), np.float32)}


def test_unmappable_module_is_refused(bundled_model: Path, tmp_path: Path) -> None:
    peft_dir = write_peft(tmp_path / "p", lora("model.layers.0.self_attn.rotary_proj", 576, 576))
    with pytest.raises(TunelabError, match="cannot map adapter module"):
        export_gguf.export_adapter(peft_dir, bundled_model, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_adapter_for_another_base_is_refused(bundled_model: Path, tmp_path: Path) -> None:
    peft_dir = write_peft(tmp_path / "p", lora("model.layers.0.self_attn.q_proj", 1024, 1024))
    with pytest.raises(TunelabError, match="trained for another base"):
        export_gguf.export_adapter(peft_dir, bundled_model, tmp_path / "a.gguf")


def test_gguf_adapter_for_another_base_is_refused_before_loading(bundled_model: Path, tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 8.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.ones((4, 2048), np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.ones((2048, 4), np.float32))
    export_gguf._write(writer)
    with pytest.raises(TunelabError, match="trained for another base"):
        check_adapter_fits(path, bundled_model)


def test_dora_and_saved_heads_are_refused(bundled_model: Path, tmp_path: Path) -> None:
    dora = write_peft(tmp_path / "d", lora("model.layers.0.self_attn.q_proj", 576, 576), use_dora=True)
    with pytest.raises(TunelabError, match="DoRA"):
        export_gguf.export_adapter(dora, bundled_model, tmp_path / "a.gguf")
    head = write_peft(tmp_path / "h", {"base_model.model.lm_head.weight": np.ones((8, 8), np.float32)})
    with pytest.raises(TunelabError, match="cannot load as LoRA"):
        export_gguf.export_adapter(head, bundled_model, tmp_path / "a.gguf")


def test_permute_matches_llama_cpp_layout() -> None:
    """Per head, rows [0..d/2) and [d/2..d) of HF become interleaved pairs (0, d/2, 1, d/2+1, ...)."""
    rows = np.arange(8, dtype=np.float32)[:, None]
    out = export_gguf.permute(rows, n_head=2)[:, 0]
    assert out.tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
