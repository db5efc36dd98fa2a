"""PEFT adapter -> GGUF LoRA adapter, and HF weights (plain or merged with an adapter) -> GGUF model.

Written with the `gguf` package the way llama.cpp's own converters do it
(`convert_lora_to_gguf.py`, `convert_hf_to_gguf.py`), but driven by the paired base GGUF: tensor
names come from `gguf.get_tensor_name_map` for the base's architecture, and every tensor is
checked against the base's shapes, so an adapter that does not fit is refused here rather than
silently misapplied by llama.cpp.

The traps, each checked per architecture by tests/test_architectures.py against logits:
- llama.cpp's llama converter permutes the rows of q and k projections (its rope works on
  interleaved pairs, HF's on halves). A LoRA update B·A of those projections needs the same row
  permutation of B, or the adapter is wrong while still "working". Only architectures listed in
  `PERMUTED_ARCHS` are permuted; the others (qwen2, gemma3, phi3, ...) keep HF's row order.
- Gemma stores its norm weights as w + 1, Qwen2 has q/k/v biases: a merge changes neither, so a
  merged export copies every 1-D tensor (norms, biases) from the base GGUF exactly as llama.cpp's
  converter wrote it, and takes only matrices from the HF weights.
- Phi-3 fuses q/k/v into `qkv_proj` and gate/up into `gate_up_proj`; llama.cpp keeps the same
  fused tensors (`attn_qkv`, `ffn_up`) in the same row order, so a LoRA on the fused module maps
  one to one. Its separate `q_proj`... do not exist, hence per-architecture default targets.
- A target the GGUF has no tensor for is refused before training (`check_targets`), not after.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.faults import pause_point
from tunelab.finetune.safe_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, safetensors_adapter
from tunelab.stores.files import atomic_file
from tunelab.stores.model_files import check_gguf, gguf_fields

PERMUTED_ARCHS = frozenset({"llama"})
"""GGUF architectures whose converter permutes q/k rows (llama.cpp's LlamaModel.permute)."""

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
"""The attention projections most architectures name this way (SFTArgs' default)."""
ARCH_DEFAULT_TARGETS = {"phi3": ("qkv_proj", "o_proj")}
"""GGUF architectures whose attention has other module names: what `DEFAULT_TARGETS` means there."""

MODEL_TYPES = ("f32", "f16", "q8_0")
"""Tensor types for exported models: f32/f16 are exact, q8_0 halves f16's size."""

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class BaseLayout:
    """What the exporter needs from the base GGUF: names, shapes, head counts."""

    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]
    """GGUF tensor name -> shape in numpy order (out, in) for matrices."""

    @classmethod
    def read(cls, gguf_path: Path) -> BaseLayout:
        fields, shapes = gguf_fields(gguf_path)
        arch = str(fields["general.architecture"])
        n_head = int(fields.get(f"{arch}.attention.head_count", 0))
        return cls(
            arch=arch,
            n_blocks=int(fields[f"{arch}.block_count"]),
            n_head=n_head,
            n_head_kv=int(fields.get(f"{arch}.attention.head_count_kv", n_head)),
            shapes=dict(shapes),
        )

    @cached_property
    def name_map(self) -> Any:
        import gguf

        arch_ids = {name: arch_id for arch_id, name in gguf.MODEL_ARCH_NAMES.items()}
        if self.arch not in arch_ids:
            raise TunelabError(f"the gguf package does not know architecture {self.arch!r}: upgrade it (pip install -U gguf)")
        return gguf.get_tensor_name_map(arch_ids[self.arch], self.n_blocks)

    def gguf_name(self, hf_module: str) -> str | None:
        """`model.layers.3.self_attn.q_proj` -> `blk.3.attn_q.weight` (None if the map has no entry)."""
        name = self.name_map.get_name(hf_module)
        return f"{name}.weight" if name else None

    def permute_rows(self, gguf_name: str, rows: np.ndarray) -> np.ndarray:
        """Apply llama.cpp's q/k row permutation to a weight (or a LoRA B) when the arch needs it."""
        if self.arch not in PERMUTED_ARCHS:
            return rows
        if gguf_name.endswith("attn_q.weight"):
            return permute(rows, self.n_head)
        if gguf_name.endswith("attn_k.weight"):
            return permute(rows, self.n_head_kv)
        return rows


def default_targets(arch: str, targets: tuple[str, ...]) -> tuple[str, ...]:
    """The attention projections of `arch` when `targets` is the generic default, else `targets` as given."""
    return ARCH_DEFAULT_TARGETS.get(arch, targets) if tuple(targets) == DEFAULT_TARGETS else tuple(targets)


def linear_modules(hf_dir: Path) -> list[str]:
    """Names of the HF model's linear layers, from its config alone (built on the meta device: no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(hf_dir))
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def check_targets(base_gguf: Path, hf_dir: Path, targets: tuple[str, ...]) -> None:
    """Refuse, before any training, LoRA targets the model lacks or the GGUF adapter cannot carry.

    Without this a run trains for minutes and then fails in the export (or, worse, exports a
    module llama.cpp ignores)."""
    layout = BaseLayout.read(base_gguf)
    modules = linear_modules(hf_dir)
    missing = [t for t in targets if not any(m.rsplit(".", 1)[-1] == t for m in modules)]
    if missing:
        names = sorted({m.rsplit(".", 1)[-1] for m in modules if m.startswith("model.")})
        raise TunelabError(
            f"this {layout.arch} model has no module(s) named {', '.join(missing)}: "
            f"check --target-modules (its linear layers: {', '.join(names)})"
        )
    for module in modules:
        if module.rsplit(".", 1)[-1] not in targets:
            continue
        name = layout.gguf_name(module)
        if name is None or name not in layout.shapes:
            raise TunelabError(
                f"a LoRA on {module} cannot be served by llama.cpp for {layout.arch} "
                f"(no GGUF tensor {name or 'mapped'}): drop {module.rsplit('.', 1)[-1]} from --target-modules"
            )


def fit_targets(args: Any, base_gguf: Path, hf_dir: Path, exported: bool = True) -> Any:
    """`args` (any argument dataclass with `target_modules`) with this architecture's default
    targets, checked against the model (and, when the adapter is exported, against the GGUF)."""
    from dataclasses import replace

    arch = BaseLayout.read(base_gguf).arch
    targets = default_targets(arch, args.target_modules)
    if exported:
        check_targets(base_gguf, hf_dir, targets)
    return args if targets == tuple(args.target_modules) else replace(args, target_modules=targets)


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: per head, HF's [first half; second half] rows -> interleaved."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def read_peft_adapter(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(adapter_config.json, tensors as float32 numpy) of a saved PEFT LoRA adapter."""
    from safetensors.numpy import load_file

    safetensors_adapter(adapter_dir)
    config_file, weights_file = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise TunelabError(f"only LoRA adapters can be exported (got {config.get('peft_type')})")
    if config.get("use_dora"):
        raise TunelabError("DoRA adapters cannot be served by llama.cpp: train without use_dora")
    tensors = {k: v.astype(np.float32) for k, v in load_file(str(weights_file)).items()}
    return config, tensors


def lora_pairs(tensors: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """HF module name -> (A, B); anything else in the adapter (saved heads, embeddings) is refused."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        name = key.removeprefix(PEFT_PREFIX)
        for marker in (".lora_A.weight", ".lora_B.weight"):
            if name.endswith(marker):
                parts.setdefault(name[: -len(marker)], {})[marker[6]] = value
                break
        else:
            raise TunelabError(
                f"the adapter has a tensor llama.cpp cannot load as LoRA: {name} (train without modules_to_save / embedding targets)"
            )
    incomplete = sorted(m for m, p in parts.items() if set(p) != {"A", "B"})
    if incomplete:
        raise TunelabError(f"the adapter is incomplete (missing lora_A or lora_B): {', '.join(incomplete[:3])}")
    return {m: (p["A"], p["B"]) for m, p in parts.items()}


def llama_cpp_alpha(config: dict[str, Any]) -> float:
    """llama.cpp scales by alpha / r; rsLoRA scales by alpha / sqrt(r), so fold that in."""
    alpha, r = float(config["lora_alpha"]), int(config["r"])
    if config.get("alpha_pattern") or config.get("rank_pattern"):
        raise TunelabError("per-module alpha/rank patterns cannot be expressed in one GGUF adapter")
    return alpha * math.sqrt(r) if config.get("use_rslora") else alpha


def export_adapter(adapter_dir: Path, base_gguf: Path, out_path: Path) -> Path:
    """Write `adapter_dir` (PEFT) as a llama.cpp GGUF LoRA for `base_gguf` at `out_path`."""
    import gguf

    layout = BaseLayout.read(base_gguf)
    config, tensors = read_peft_adapter(adapter_dir)
    alpha = llama_cpp_alpha(config)
    mapped: list[tuple[str, np.ndarray, np.ndarray]] = []
    for module, (a, b) in sorted(lora_pairs(tensors).items()):
        name = layout.gguf_name(module)
        if name is None:
            raise TunelabError(f"cannot map adapter module {module!r} to a {layout.arch} GGUF tensor: train without it")
        if name not in layout.shapes:
            raise TunelabError(f"the adapter targets {module} ({name}), which the base GGUF does not have (tied lm_head?)")
        if (b.shape[0], a.shape[1]) != layout.shapes[name]:
            raise TunelabError(
                f"this adapter was trained for another base: {module} is {b.shape[0]}x{a.shape[1]} "
                f"but {name} in {base_gguf.name} is {layout.shapes[name][0]}x{layout.shapes[name][1]}"
            )
        mapped.append((name, a, layout.permute_rows(name, b)))
    with atomic_file(out_path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), layout.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, a, b in mapped:
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
        _write(writer)
    return out_path


def hf_state_dict(hf_dir: Path, adapter_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The HF checkpoint's weights as float32 numpy, with `adapter_dir` merged in when given."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, use_safetensors=True)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, safetensors_adapter(adapter_dir)).merge_and_unload()
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def export_model(hf_dir: Path, base_gguf: Path, out_path: Path, tensor_type: str = "f16", adapter_dir: Path | None = None) -> Path:
    """Write the HF weights (merged with `adapter_dir` if given) as a standalone GGUF model.

    Metadata (tokenizer, chat template, hyper-parameters) is copied from `base_gguf`, so the
    exported model tokenises and templates exactly like the base it came from. Only matrices come
    from the HF weights; 1-D tensors (norms, biases), which a LoRA merge never changes, are copied
    from the base, because llama.cpp's converter rewrites some of them (Gemma's norms are w + 1).
    """
    import gguf
    from gguf import GGMLQuantizationType, GGUFReader

    if tensor_type not in MODEL_TYPES:
        raise TunelabError(f"unknown GGUF type {tensor_type!r}: use one of {', '.join(MODEL_TYPES)}")
    reader = GGUFReader(check_gguf(base_gguf))
    layout = BaseLayout.read(base_gguf)
    by_gguf_name: dict[str, np.ndarray] = {}
    for key, value in hf_state_dict(hf_dir, adapter_dir).items():
        name = layout.gguf_name(key.removesuffix(".weight")) if key.endswith(".weight") and value.ndim >= 2 else None
        if name is not None and name in layout.shapes:
            by_gguf_name[name] = layout.permute_rows(name, value)
    qtype = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16, "q8_0": GGMLQuantizationType.Q8_0}[tensor_type]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[
        tensor_type
    ]
    with atomic_file(out_path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), layout.arch)
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        writer.add_file_type(file_type)
        for tensor in reader.tensors:
            data = by_gguf_name.get(tensor.name)
            if data is None:
                if tensor.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
                    raise TunelabError(f"the HF weights have no tensor for {tensor.name}: is {hf_dir} the model of {base_gguf.name}?")
                data = np.asarray(tensor.data, dtype=np.float32).reshape(layout.shapes[tensor.name])
            if data.shape != layout.shapes[tensor.name]:
                raise TunelabError(f"{tensor.name}: HF shape {data.shape} vs GGUF {layout.shapes[tensor.name]}: not the same model")
            _add_model_tensor(writer, tensor.name, data, qtype)
        _write(writer)
    return out_path


def _add_model_tensor(writer: Any, name: str, data: np.ndarray, qtype: Any) -> None:
    """Norms and biases stay f32 (as in llama.cpp's converter); matrices get `qtype` where it fits."""
    from gguf import GGMLQuantizationType, quants

    if data.ndim < 2 or qtype == GGMLQuantizationType.F32:
        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
        return
    if qtype == GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 == 0:
        writer.add_tensor(name, quants.quantize(data, qtype), raw_dtype=qtype)
        return
    writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float16))


def _write(writer: Any) -> None:
    """Write and close a GGUF inside `atomic_file`: the fault tests kill the process after the last
    byte and before the rename, where only a temp file exists."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    pause_point("export.gguf_written")
