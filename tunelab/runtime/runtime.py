"""The one runtime of a process: every prompt the app or a command serves goes through it.

Created once by the CLI command or the TUI app and handed to chat, compare, the side-by-side
screen, best-of and the learning curve, so that

- llama.cpp loads the model once per process (opening F3 after chatting reuses the chat's model),
  and a model switch reloads once;
- every adapter served passes the same fit check against the base, wherever it was asked for;
- a bank's selector (an embedding index synced, a token matrix built) and a reward model are
  built once and shared.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.config import Settings
from tunelab.engine.llama_engine import LlamaEngine, adapter_switching_supported
from tunelab.errors import TunelabError
from tunelab.stores.banks import Bank, BankStore
from tunelab.stores.files import cached_sha256
from tunelab.stores.models import ModelRegistry
from tunelab.stores.runs import adapter_gguf

if TYPE_CHECKING:
    from tunelab.eval.scorer import Scorer
    from tunelab.icl.selectors import IndexProgress, Selector


class Runtime:
    def __init__(self, settings: Settings, conn: sqlite3.Connection, engine: LlamaEngine | None = None) -> None:
        """`engine`: an already loaded engine for `settings.model` (tests share one across apps)."""
        self.settings = settings
        self.conn = conn
        self.models = ModelRegistry(conn)
        self._engine = engine
        self._adapter_engines: dict[Path, LlamaEngine] = {}
        """Only where llama.cpp cannot switch adapters on a loaded model: one engine per adapter."""
        self._selectors: dict[tuple[int, str, str, int], Selector] = {}
        self._scorers: dict[str | None, tuple[str, Scorer]] = {}
        self._fitted: set[tuple[Path, Path]] = set()
        """(adapter, base) pairs already checked: the check reads both GGUFs, and chat asks per reply."""
        self.loads = 0
        """How many times this runtime loaded a model (the app's one-load promise is tested on it)."""

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def model_path(self) -> Path:
        """The base model's file, resolved from the settings without loading it."""
        return self._engine.model_path if self._engine is not None else self.models.resolve(self.settings.model)

    @property
    def engine(self) -> LlamaEngine:
        """The base model, loaded on first use (the TUI calls this from a worker)."""
        if self._engine is None:
            self._engine = self._load(self.models.resolve(self.settings.model))
        return self._engine

    @property
    def model_sha256(self) -> str:
        return cached_sha256(self.conn, self.model_path)

    def switch_model(self, model: str) -> bool:
        """Serve `model` from now on; True when that meant a reload (the old engine is closed)."""
        path = self.models.resolve(model)
        self.settings = replace(self.settings, model=model)
        if self._engine is not None and self._engine.model_path == path:
            return False
        self.close()
        self._scorers = {}  # reward models belong to a base
        self._engine = self._load(path)
        return True

    def _load(self, path: Path, lora_path: Path | None = None) -> LlamaEngine:
        self.loads += 1
        return LlamaEngine(
            path, n_ctx=self.settings.n_ctx, n_gpu_layers=self.settings.n_gpu_layers, n_threads=self.settings.n_threads, lora_path=lora_path
        )

    def adapter_path(self, name: str) -> Path:
        return adapter_gguf(self.conn, name).resolve()

    def adapter_sha256(self, name: str | None) -> str | None:
        return cached_sha256(self.conn, self.adapter_path(name)) if name else None

    def engine_for(self, adapter: str | None, scale: float = 1.0) -> LlamaEngine:
        """The engine serving trained adapter `adapter` at `scale` (None = the plain base).

        Refused when the adapter was made for another base. Where llama.cpp can switch adapters on
        a loaded model this is always the base engine; otherwise one engine per adapter."""
        from tunelab.finetune.export_gguf import check_adapter_fits

        path = self.adapter_path(adapter) if adapter else None
        if path is not None and (path, self.model_path) not in self._fitted:
            check_adapter_fits(path, self.model_path)
            self._fitted.add((path, self.model_path))
        base = self.engine
        if adapter_switching_supported():
            if base.lora_path != path or base.lora_scale != scale:
                base.set_adapter(path, scale)
            return base
        if scale != 1.0:
            raise TunelabError("this llama-cpp-python cannot scale adapters: use scale 1")
        if path is None:
            return base
        if path not in self._adapter_engines:
            self._adapter_engines[path] = self._load(base.model_path, lora_path=path)
        return self._adapter_engines[path]

    def bank(self, name: str) -> Bank:
        """The bank, or a one-line error naming the ones that exist."""
        return BankStore(self.conn).get(name)

    def selector(self, bank: Bank, kind: str, seed: int = 0, progress: IndexProgress | None = None) -> Selector:
        """One selector per (bank version, kind, seed) for the process: an embedding index is synced
        once (ask with `progress` first to show the indexing of a new bank)."""
        from tunelab.icl.selectors import make_selector  # chromadb + sentence-transformers: load on use

        key = (bank.id, bank.created_at, kind, seed)
        if key not in self._selectors:
            self._selectors[key] = make_selector(kind, bank, self.conn, self.settings, seed=seed, progress=progress)
        return self._selectors[key]

    def reward_model(self, name: str | None) -> tuple[str, Scorer]:
        """(name, scorer) of reward model `name` (None: the newest for this base), loaded once."""
        if name not in self._scorers:
            from tunelab.finetune.feedback_runs import load_reward_model

            self._scorers[name] = load_reward_model(self.settings, self.conn, name, self.model_path)
        return self._scorers[name]

    def close(self) -> None:
        for engine in [self._engine, *self._adapter_engines.values()]:
            if engine is not None:
                engine.close()
        self._engine, self._adapter_engines = None, {}
