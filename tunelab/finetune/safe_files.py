"""Weights are loaded from safetensors only: a pickle (`.bin`, `.pt`) can run code when loaded.

PEFT silently falls back to `adapter_model.bin` (a torch pickle) when a folder has no
`adapter_model.safetensors`, and transformers to `pytorch_model.bin`; an adapter or reward model
copied from elsewhere is untrusted, so such a folder is refused before anything is unpickled.
Trainer checkpoints (optimizer, scheduler, RNG state) are torch pickles by design; torch >= 2.6
loads them with `weights_only=True`, which refuses any object that is not plain tensors/containers,
and `run_record.status_on_error` turns that refusal into one line.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def safetensors_adapter(adapter_dir: Path) -> Path:
    """`adapter_dir` if it is a PEFT adapter stored as safetensors, else a one-line refusal."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file() or not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        pickled = sorted(p.name for p in adapter_dir.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        why = f" (found {', '.join(pickled)}: pickles are never loaded)" if pickled else ""
        raise TunelabError(f"not a PEFT adapter dir (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}){why}: {adapter_dir}")
    return adapter_dir
