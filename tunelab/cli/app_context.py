"""What every command needs, opened lazily: settings and the database."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tunelab.config import Settings
from tunelab.runtime.home import open_database

if TYPE_CHECKING:
    from tunelab.runtime.runtime import Runtime


class AppContext:
    def __init__(self, home: str | None = None, engine_url: str | None = None) -> None:
        self.home = home
        self.engine_url = engine_url
        """The app's --engine-url: the TUI answers through that server."""

    @cached_property
    def settings(self) -> Settings:
        return Settings.load(home=self.home, engine_url=self.engine_url)

    @cached_property
    def conn(self) -> sqlite3.Connection:
        """The database, after finishing or undoing any deletion a killed process left half done
        and removing the temp files killed writers left."""
        return open_database(self.settings)

    @cached_property
    def runtime(self) -> Runtime:
        """The command's one runtime (its engine loads on first use), after any engine options applied."""
        from tunelab.runtime.runtime import Runtime

        return Runtime(self.settings, self.conn)


pass_app = click.make_pass_decorator(AppContext)

Command = TypeVar("Command", bound=Callable[..., Any])


def engine_options(func: Command) -> Command:
    """--model, --n-ctx, --n-gpu-layers, --threads, --engine-url, --engine-model, --parallel: overrides of the matching settings."""
    func = click.option(
        "--parallel",
        type=int,
        default=None,
        help="Replies decoded together by compare, curve, distill and best-of (0: as many as memory allows; 1: one at a time).",
    )(func)
    func = click.option(
        "--engine-model", default=None, help="With --engine-url: the server's model id for the base (default: the first it lists)."
    )(func)
    func = click.option(
        "--engine-url",
        default=None,
        metavar="URL",
        help="Answer through this OpenAI-compatible server (llama-server, vLLM, llama-cpp-python) instead of llama.cpp here; "
        "API key from TUNELAB_ENGINE_API_KEY.",
    )(func)
    func = click.option("--threads", "n_threads", type=int, default=None, help="CPU threads (default: one per core).")(func)
    func = click.option("--n-gpu-layers", type=int, default=None, help="Layers on the GPU (-1 all, 0 none).")(func)
    func = click.option("--n-ctx", type=int, default=None, help="Context window in tokens.")(func)
    func = click.option("--model", "-m", default=None, help="GGUF path or registered model name.")(func)
    return func


def apply_engine_options(app: AppContext, kwargs: dict[str, Any]) -> None:
    overrides = {k: kwargs.pop(k) for k in ("model", "n_ctx", "n_gpu_layers", "n_threads", "engine_url", "engine_model", "parallel")}
    overrides["engine_url"] = overrides["engine_url"] or app.engine_url
    app.settings = Settings.load(home=app.home, **overrides)
