"""One settings object for the CLI, the TUI and the tests.

Values come, in order of precedence, from command-line flags, `TUNELAB_*` environment variables,
`config.toml` in the data dir, and the defaults below, so the three can't drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from tunelab.errors import TunelabError


def default_home() -> Path:
    """The data dir: `TUNELAB_HOME`, else `$XDG_DATA_HOME/tunelab`, else ~/.local/share/tunelab."""
    if env := os.environ.get("TUNELAB_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "tunelab"


BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
"""What a boolean setting may say in the environment (config.toml has real booleans)."""


@dataclass(frozen=True)
class DataDir:
    """The data dir's layout: every module asks for a folder here, so each is named in one place
    (a second spelling of `home / "adapters"` would be a second place to forget when it moves)."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "tunelab.db"

    @property
    def adapters(self) -> Path:
        """One folder per finished adapter: the PEFT weights, adapter.gguf and exports."""
        return self.root / "adapters"

    @property
    def reward_models(self) -> Path:
        return self.root / "reward_models"

    @property
    def runs(self) -> Path:
        """One folder per training run: its rows, checkpoints and logs."""
        return self.root / "runs"

    @property
    def models(self) -> Path:
        """Caches of base models: dequantised HF weights, exact-weight GGUFs."""
        return self.root / "models"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def chroma(self) -> Path:
        return self.root / "chroma"

    @property
    def chroma_damaged(self) -> Path:
        """Where a Chroma store that would not open is moved before it is rebuilt from SQLite."""
        return self.root / "chroma.damaged"

    @property
    def error_log(self) -> Path:
        """Tracebacks of unexpected errors in the TUI's workers (the screen shows one line)."""
        return self.root / "tui-errors.log"

    @property
    def trash(self) -> Path:
        """Files of a deletion in progress, put back or removed by the next command."""
        return self.root / ".trash"


@dataclass
class Settings:
    """Everything a user can configure. Each field is also `TUNELAB_<FIELD>` and a key in config.toml."""

    home: Path = field(default_factory=default_home)
    """Data dir: the SQLite database, the Chroma store, adapters, reports and model caches."""
    model: str = ""
    """Chat model: a GGUF path or a registered name; empty means the bundled SmolLM2-135M-Instruct."""
    n_ctx: int = 4096
    """Context window in tokens (history, ICL examples and the reply share it)."""
    n_gpu_layers: int = -1
    """Layers offloaded to the GPU: -1 = all when llama.cpp was built with GPU support, 0 = CPU only."""
    n_threads: int = 0
    """CPU threads for llama.cpp; 0 = one per core."""
    engine_url: str = ""
    """An OpenAI-compatible server to answer instead of llama.cpp in-process (llama-server, vLLM,
    llama-cpp-python's server), e.g. http://gpu-box:8080; its API key comes from TUNELAB_ENGINE_API_KEY."""
    engine_model: str = ""
    """The server's model id for the base model; empty = the first model it lists."""
    parallel: int = 0
    """Replies a grid (compare, curve, distillation, best-of) decodes together: 0 = as many as a
    quarter of the free memory holds (at most 8) in-process, one at a time on a remote engine;
    1 = one at a time. The replies are the same either way; only the wall time differs."""
    engine_prompt_cache: bool = False
    """llama-server with LoRAs: reuse each slot's cached prompt between requests of one adapter
    setting. Only with a server started with `--cache-ram 0`: its RAM prompt cache can hand a
    request KV computed under another adapter. Off = every prompt is evaluated in full."""
    embedding_model: str = ""
    """sentence-transformers model dir for the embedding selector; empty = the bundled all-MiniLM-L6-v2."""
    chroma_url: str = ""
    """Chroma server URL (e.g. http://127.0.0.1:8000); empty = an embedded store under the data dir."""
    chroma_token: str = ""
    """Token for a Chroma server started with token auth (sent as `Authorization: Bearer`); empty = none."""
    icl_cache_recompute: int = 4
    """Example cache (`--icl-cache`, `~cached` arms): tokens at the start of each placed example
    decoded again, attending to the examples before it; more is closer to the exact prompt and
    slower. Measured (bundled SmolLM2-135M, demo sentiment bank, jaccard k=4, 20 held-out reviews,
    greedy): the reply equal to the exact prompt's for 9/20 at 0, 11/20 at 4, 10/20 at 8 and 16,
    15/20 at 32 (about a whole review), 20/20 with every token; 4 is the cheapest of the plateau."""
    keymap: dict[str, str] = field(default_factory=dict)
    """TUI key remapping, binding id -> keys, e.g. {"chat.regenerate" = "ctrl+r"} (config.toml only)."""

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser()
        problems = []
        if self.n_ctx < 256:
            problems.append(f"n_ctx must be at least 256 (got {self.n_ctx})")
        if self.icl_cache_recompute < 0:
            problems.append(f"icl_cache_recompute must be >= 0 (got {self.icl_cache_recompute})")
        if self.n_threads < 0:
            problems.append(f"n_threads must be >= 0 (got {self.n_threads})")
        if self.parallel < 0:
            problems.append(f"parallel must be >= 0 (got {self.parallel})")
        if problems:
            raise TunelabError("bad settings: " + "; ".join(problems))

    @property
    def dirs(self) -> DataDir:
        return DataDir(self.home)

    @property
    def db_path(self) -> Path:
        return self.dirs.db

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Defaults < config.toml < environment < overrides (flags left at None are ignored)."""
        home = Path(str(overrides.get("home") or default_home())).expanduser()
        values: dict[str, object] = {}
        config_file = home / "config.toml"
        if config_file.is_file():
            try:
                values.update(tomllib.loads(config_file.read_text(encoding="utf-8")))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise TunelabError(f"cannot read {config_file}: {exc}") from None
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TunelabError(f"unknown key(s) in {config_file}: {', '.join(unknown)}")
        for name in names:
            env = os.environ.get(f"TUNELAB_{name.upper()}")
            if env is not None and name not in ("home", "keymap"):
                values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["home"] = home
        for name, value in list(values.items()):
            if names[name].type == "int" and isinstance(value, str):
                try:
                    values[name] = int(value)
                except ValueError:
                    raise TunelabError(f"setting {name} must be an integer (got {value!r})") from None
            if names[name].type == "bool" and isinstance(value, str):
                if value.strip().lower() not in BOOLEAN_WORDS:
                    raise TunelabError(f"setting {name} must be true or false (got {value!r})")
                values[name] = BOOLEAN_WORDS[value.strip().lower()]
        return cls(**values)  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        """Every setting as text, secrets masked (this is printed by `tunelab doctor`)."""
        values = {k: str(v) for k, v in dataclasses.asdict(self).items()}
        if self.chroma_token:
            values["chroma_token"] = "(set)"
        return values
