"""Training under `accelerate launch`: one process per device, tunelab's own side effects on one of them.

trl / transformers already train data-parallel (DDP, DeepSpeed) when accelerate starts the
processes; what they cannot know is that a tunelab run also records itself: the run row, its
progress and status, the frozen rows in the run dir, the dequantised base cache, the GGUF export
and the adapter's registration. Those happen on the main process only, once. The other
processes open the run the main one recorded and train their share of each batch silently.

Started any other way (the plain CLI, the TUI) a process is its own main process and nothing
here waits for anyone.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tunelab.errors import TunelabError


class Planned(Protocol):
    """What the other processes need of the main process's plan to open the same run."""

    @property
    def run(self) -> Any: ...

    resume_from: Path | None


P = TypeVar("P", bound=Planned)


def processes() -> int:
    """How many processes train this run (accelerate launch / torchrun set WORLD_SIZE for each; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    """Whether this process is one of several started together to train one run."""
    return processes() > 1


def _state() -> Any:
    """accelerate's process state, on the device the Trainer will use (`use_cpu` without CUDA).

    The state is one per process and the first to create it sets it up: created without `cpu`
    on a machine with no GPU it would see no distributed run at all (and join no process group)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    """Whether this process writes tunelab's records and files (always, unless launched as a non-main rank)."""
    return not launched() or bool(_state().is_main_process)


@dataclass(frozen=True)
class _Prepared:
    """What the main process tells the others after preparing: the run to open, or that it failed."""

    run_id: int | None
    resume_from: Path | None = None
    exit_code: int = 1
    """The main process's exit status when it failed (it prints the error; the others exit quietly)."""


def prepared_on_main(prepare: Callable[[], P], follow: Callable[[int, Path | None], P]) -> P:
    """The plan of this run: the main process checks and records it (`prepare`: the run row, the
    frozen rows, the base dequantised once); the others wait for that, then open the recorded run
    (`follow(run_id, resume_from)`), so every process trains the same run on the same rows.

    A refused or failed `prepare` is passed on too: the others exit with its status instead of
    waiting forever for a run that never comes."""
    if not launched():
        return prepare()
    from accelerate.utils import broadcast_object_list

    if is_main():
        told = _Prepared(None)
        try:
            plan = prepare()
            told = _Prepared(plan.run.id, plan.resume_from)
            return plan
        except TunelabError as exc:
            told = _Prepared(None, exit_code=exc.exit_code)
            raise
        finally:
            broadcast_object_list([told])
    (told,) = broadcast_object_list([None])
    if told.run_id is None:
        raise SystemExit(told.exit_code)
    return follow(told.run_id, told.resume_from)


def any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process: a cancel seen by one must stop all of them at the same
    step (a process that stops alone leaves the others waiting in their next gradient exchange)."""
    if not launched():
        return flag
    from accelerate.utils import gather_object

    return any(gather_object([flag]))


DEEPSPEED_PACKAGE = "deepspeed"


def deepspeed_problem(config: str) -> str | None:
    """Why `config` cannot be handed to the Trainer as a DeepSpeed config, else None ("" = no DeepSpeed).

    Checked with the other settings, so a missing package or a broken file is one line before any
    model loads (the Trainer would fail later, with a traceback)."""
    if not config:
        return None
    path = Path(config).expanduser()
    if not path.is_file():
        return f"deepspeed config {config} not found"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"deepspeed config {config} is not JSON ({exc})"
    if not isinstance(values, dict):
        return f"deepspeed config {config} must be a JSON object"
    if importlib.util.find_spec(DEEPSPEED_PACKAGE) is None:
        return "deepspeed needs the deepspeed package: pip install deepspeed (on a machine with CUDA)"
    return None


def deepspeed_config(config: str) -> str:
    """The config's absolute path as stored with the run: `--resume` from another folder finds the same file."""
    return str(Path(config).expanduser().resolve()) if config else ""


def deepspeed_kwargs(config: str) -> dict[str, Any]:
    """The TrainingArguments for a DeepSpeed config file (checked by `deepspeed_problem`); {} without one.

    The Trainer fills the config's "auto" values (batch sizes, learning rate, bf16) from its own arguments."""
    return {"deepspeed": config} if config else {}
