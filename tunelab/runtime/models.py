"""The model files tunelab knows, as `tunelab models`, `tunelab tokens` and `tunelab doctor` show
them: the bundled and packaged GGUFs, the ones the user registered, and which one serves a reply."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.stores.conversations import ConversationStore
from tunelab.stores.model_files import ModelEntry, bundled_chat_model, bundled_embedding_model
from tunelab.stores.models import ModelRegistry


class ModelService:
    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.registry = ModelRegistry(conn)

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """One record per known model (the `--json` rows): where its file is, its size (None while
        a packaged one is not unpacked yet, or missing), how to install an extra, and whether it
        is the default chat model."""
        default = self.settings.model
        return [
            {
                "name": e.name,
                "source": e.source,
                "path": str(e.path) if e.source != "extra" else None,
                "size_bytes": e.path.stat().st_size if e.source != "extra" and e.path.is_file() else None,
                "install": e.install or None,
                "default": default in ("", e.name) and bool(default or e.source == "bundled"),
            }
            for e in self.registry.list()[: limit or None]
        ]

    def add(self, name: str, path: Path) -> ModelEntry:
        """Register a GGUF file under `name` (usable as --model NAME)."""
        return self.registry.add(name, path)

    def tokenizer_model(self, model: str | None, message_id: int | None = None) -> Path:
        """`model`, else the model that generated reply `message_id` (when its file is still there), else the chat model."""
        if model is None and message_id is not None:
            stored = ConversationStore(self.conn).message(message_id).model_path
            if stored and Path(stored).is_file():
                return Path(stored)
        return self.registry.resolve(model or self.settings.model)


def bundled_files() -> tuple[Path | None, Path | None]:
    """(chat model, embedding model) shipped as packages, None where the package is missing."""
    return bundled_chat_model(), bundled_embedding_model()
