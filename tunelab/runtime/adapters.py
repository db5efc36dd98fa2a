"""Trained adapters and training runs as `tunelab adapters` sees them: list, delete, and export
(merged into the base as one GGUF, as an Ollama model folder, or the base's training weights as
a GGUF registered as a model). Training them is `runtime.training`."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.config import Settings
from tunelab.finetune.export_gguf import MODEL_TYPES
from tunelab.stores.models import ModelRegistry
from tunelab.stores.runs import Adapter, Run, RunStore

if TYPE_CHECKING:
    from tunelab.finetune.ollama import OllamaExport

GGUF_TYPES = MODEL_TYPES
"""The tensor types a merged or base GGUF can be written in."""


class AdapterService:
    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.runs = RunStore(conn)

    def adapters(self, limit: int | None = None) -> list[tuple[Adapter, Run]]:
        """The newest `limit` adapters (all for None or 0), each with the run that trained it."""
        return [(adapter, self.runs.get(str(adapter.run_id))) for adapter in self.runs.adapters()[: limit or None]]

    def training_runs(self, limit: int | None = None) -> list[Run]:
        return self.runs.list()[: limit or None]

    def delete(self, name: str) -> list[Path]:
        """Delete an adapter, a reward model or an unfinished run with its files (a run still
        training is refused); the files and folders removed."""
        return self.runs.delete(name, self.settings.home)

    def export_merged(self, name: str, tensor_type: str, out: Path | None = None) -> Path:
        """Adapter `name` merged into its base as one standalone GGUF (default: beside the adapter), recorded with the adapter."""
        from tunelab.finetune.export_gguf import export_model

        adapter = self.runs.adapter(name)
        run = self.runs.get(str(adapter.run_id))
        out = out or Path(adapter.peft_dir) / f"merged-{tensor_type}.gguf"
        export_model(Path(run.hf_dir), Path(run.base_gguf), out, tensor_type, Path(adapter.peft_dir))
        self.runs.set_export(name, tensor_type, out)
        return out

    def export_ollama(self, name: str, folder: Path | None = None, merged_type: str | None = None) -> OllamaExport:
        """Adapter `name` as an Ollama model folder (a Modelfile and the GGUF it needs)."""
        from tunelab.finetune.ollama import export_ollama

        return export_ollama(self.conn, name, folder, merged_type)

    def export_base(self, model: str | None, tensor_type: str, name: str | None = None) -> tuple[Path, str]:
        """The training weights of `model` (default: the chat model) as an unquantised GGUF,
        registered as a model: chat on exactly the weights adapters learn on. (file, model name)"""
        from tunelab.finetune.base_weights import prepare_base
        from tunelab.finetune.export_gguf import export_model

        registry = ModelRegistry(self.conn)
        gguf_path = registry.resolve(self.settings.model if model is None else model)
        base = prepare_base(self.conn, self.settings.dirs.models, gguf_path)
        out = base.hf_dir / f"base-{tensor_type}.gguf"
        export_model(base.hf_dir, base.gguf_path, out, tensor_type)
        name = name or f"{gguf_path.stem.split('.')[0].lower()}-{tensor_type}"
        registry.add(name, out)
        return out, name
