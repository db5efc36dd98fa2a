"""The one runtime of a process: every prompt the app or a command serves goes through it.

Created once by the CLI command or the TUI app and handed to chat, compare, the side-by-side
screen, best-of and the learning curve, so that

- the engine - llama.cpp in this process, or an OpenAI-compatible server when `engine_url` is
  set - is made once: llama.cpp loads the model once per process (opening F3 after chatting reuses the chat's model),
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
from tunelab.engine.protocol import ChatEngine
from tunelab.engine.remote import RemoteEngine
from tunelab.errors import TunelabError
from tunelab.stores.banks import Bank, BankStore
from tunelab.stores.files import cached_sha256
from tunelab.stores.model_files import check_adapter_fits
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
        self._engine: LlamaEngine | RemoteEngine | None = engine
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
    def remote(self) -> bool:
        """Whether replies come from an OpenAI-compatible server (`engine_url`) instead of llama.cpp here."""
        return bool(self.settings.engine_url)

    @property
    def model_file(self) -> Path | None:
        """The served model's GGUF on this machine, resolved without loading it; with a remote
        engine only when `--model` names the file the server serves (None otherwise)."""
        if isinstance(self._engine, LlamaEngine):
            return self._engine.model_path
        if self.remote and not self.settings.model:
            return None
        return self.models.resolve(self.settings.model)

    @property
    def model_path(self) -> Path:
        """The served model's GGUF (adapter fit checks, reward models and training need the file)."""
        path = self.model_file
        if path is None:
            raise TunelabError(f"this needs the GGUF of the model the engine at {self.settings.engine_url} serves: name it with --model")
        return path

    @property
    def model_label(self) -> str:
        """What the screen's title shows: the model file, or the server's model and URL."""
        if self._engine is not None:
            return self._engine.model_name
        return self.settings.engine_url if self.remote else self.model_path.name

    @property
    def engine(self) -> ChatEngine:
        """The base model, loaded (or connected to) on first use (the TUI calls this from a worker)."""
        return self._base()

    def _base(self) -> LlamaEngine | RemoteEngine:
        if self._engine is None:
            self._engine = self._connect() if self.remote else self._load(self.models.resolve(self.settings.model))
        return self._engine

    @property
    def llama(self) -> LlamaEngine:
        """The in-process llama.cpp engine, for what only it can show (the tokens view)."""
        base = self._base()
        if isinstance(base, RemoteEngine):
            raise TunelabError(f"this shows llama.cpp's own tokens: it needs the in-process engine, not the one at {base.url}")
        return base

    @property
    def model_sha256(self) -> str:
        """The served model file's hash; "" for a remote model not named locally (the provenance
        then records the server's URL and model id instead)."""
        path = self.model_file
        return cached_sha256(self.conn, path) if path is not None else ""

    def switch_model(self, model: str) -> bool:
        """Serve `model` from now on; True when that meant a reload (the old engine is closed).
        With a remote engine `model` is one of the server's model ids."""
        if self.remote:
            self.close()
            self.settings = replace(self.settings, engine_model=model)
            self._engine = self._connect()
            return True
        path = self.models.resolve(model)
        self.settings = replace(self.settings, model=model)
        if isinstance(self._engine, LlamaEngine) and self._engine.model_path == path:
            return False
        self.close()
        self._scorers = {}  # reward models belong to a base
        self._engine = self._load(path)
        return True

    def _connect(self) -> RemoteEngine:
        self.loads += 1
        settings = self.settings
        return RemoteEngine(settings.engine_url, settings.engine_model, n_ctx=settings.n_ctx, prompt_cache=settings.engine_prompt_cache)

    def _load(self, path: Path, lora_path: Path | None = None) -> LlamaEngine:
        self.loads += 1
        return LlamaEngine(
            path, n_ctx=self.settings.n_ctx, n_gpu_layers=self.settings.n_gpu_layers, n_threads=self.settings.n_threads, lora_path=lora_path
        )

    def adapter_path(self, name: str) -> Path:
        return adapter_gguf(self.conn, name).resolve()

    def adapter_sha256(self, name: str | None) -> str | None:
        return cached_sha256(self.conn, self.adapter_path(name)) if name else None

    def engine_for(self, adapter: str | None, scale: float = 1.0) -> ChatEngine:
        """The engine serving trained adapter `adapter` at `scale` (None = the plain base).

        Refused when the adapter was made for another base, or when a remote server does not
        serve it. Where llama.cpp can switch adapters on a loaded model this is always the base
        engine; otherwise one engine per adapter."""

        path = self.adapter_path(adapter) if adapter else None
        if self.remote:
            remote = self._base()
            assert isinstance(remote, RemoteEngine)
            if (remote.adapter, remote.lora_scale) != (adapter, scale):
                remote.set_adapter(adapter, path, scale)
            return remote
        if path is not None and (path, self.model_path) not in self._fitted:
            check_adapter_fits(path, self.model_path)
            self._fitted.add((path, self.model_path))
        base = self.llama
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
            from tunelab.finetune.methods.reward import load_reward_model

            self._scorers[name] = load_reward_model(self.settings, self.conn, name, self.model_path)
        return self._scorers[name]

    def close(self) -> None:
        for engine in [self._engine, *self._adapter_engines.values()]:
            if engine is not None:
                engine.close()
        self._engine, self._adapter_engines = None, {}
