"""What every training command shares: flags generated from an argument dataclass, the progress
line, and Ctrl-C as "stop after this step with a checkpoint" (twice: abort at once).

`tunelab train` (SFT) and `tunelab feedback train` (KTO / DPO / reward) print the same line from
the same `TrainProgress` events, so a user reads one format whatever they train.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tunelab.field_types import field_types
from tunelab.runtime.training import RENAMED, Planned, field_docs, is_main, prepared_on_main, processes

if TYPE_CHECKING:
    from tunelab.finetune.progress import Listener, TrainProgress

P = TypeVar("P", bound=Planned)

OLD_FLAGS = {**{new: "--" + old for old, new in RENAMED.items()}, "max_steps": "--steps"}
"""Field -> the flag it had before both training commands took peft / trl's names
(`tunelab train --lr`, `tunelab feedback train --steps`); hidden from --help."""


def dataclass_options(cls: type, only: Collection[str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One flag per field of `cls` (or per field named in `only`), help from the field's docstring,
    so flags and dataclass can't drift.

    Every flag defaults to None ("not given"): `args_from` then leaves the dataclass default.
    Tuple fields take a comma-separated list; bool fields get `--x/--no-x`; a field with
    `metadata={"choices": ...}` takes one of them. A field's old flag (`OLD_FLAGS`) stays as a
    hidden option with the same destination, so scripts written against it keep working.
    """
    docs = field_docs(cls)
    kinds = field_types(cls)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(fields(cls)):
            if only is not None and f.name not in only:
                continue
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not MISSING else None
            help_text = f"{docs.get(f.name, '')} (default {default})"
            kind = kinds[f.name].base
            if choices := f.metadata.get("choices"):
                func = click.option(flag, f.name, type=click.Choice(choices), default=None, help=help_text)(func)
            elif kind is bool:
                func = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)(func)
            elif kind is tuple:
                func = click.option(flag, f.name, default=None, help=f"{help_text}; comma-separated")(func)
            else:
                func = click.option(flag, f.name, type=kind, default=None, help=help_text)(func)
                if f.name in OLD_FLAGS:
                    func = click.option(OLD_FLAGS[f.name], f.name, type=kind, default=None, hidden=True)(func)
        return func

    return decorate


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--resume, --restart, --model and --hf-dir: spelled and explained the same in every training command."""
    options = [
        click.option(
            "--resume",
            "resume",
            default=None,
            metavar="RUN",
            help="Continue a cancelled, failed or interrupted run from its last checkpoint.",
        ),
        click.option(
            "--restart",
            "restart",
            default=None,
            metavar="RUN",
            help="Train a stopped run again from step 0 (same name, settings and rows).",
        ),
        click.option("--model", "-m", default=None, help="Base GGUF (path or registered name); default: the chat model."),
        click.option(
            "--hf-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="HF checkpoint of the same model (default: dequantise the GGUF).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def given_values(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The dataclass fields whose flags were given, parsed (comma lists split for tuple fields), not yet checked."""
    kinds = field_types(cls)
    values = {k: v for k, v in kwargs.items() if v is not None}
    for name in values:
        if kinds[name].base is tuple:
            values[name] = kinds[name].parse(values[name])
    return values


def args_from(cls: type, kwargs: dict[str, Any]) -> Any:
    """The dataclass from the flags that were given (checked by its `__post_init__`)."""
    return cls(**given_values(cls, kwargs))


def show(event: TrainProgress) -> None:
    """One progress line, rewritten in place on stderr: a bar, then the event's own description."""
    width = 24
    filled = int(width * event.step / max(1, event.total))
    bar = "#" * filled + "-" * (width - filled)
    click.echo(f"\r[{bar}] {event.describe()}   ", nl=False, err=True)


@contextmanager
def ctrl_c_checkpoints(main: bool = True) -> Iterator[threading.Event]:
    """The cancel event for a run: the first Ctrl-C sets it (the trainer saves and stops after the
    step), a second raises KeyboardInterrupt. The previous handler is restored afterwards.

    `main`: whether this process talks to the user (under `accelerate launch` every process
    gets the signal and stops, but only the main one says so)."""
    cancel = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        if main:
            click.echo("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort at once)", err=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)
        if main:
            click.echo(err=True)


def where(device: str) -> str:
    """The device a run trains on, with the process count under `accelerate launch` (each takes a share of every batch)."""
    n = processes()
    return f"{device} × {n} processes" if n > 1 else device


def train_until_done(
    prepare: Callable[[], P],
    follow: Callable[[int, Path | None], P],
    announce: Callable[[P], None],
    train: Callable[[P, Listener | None, threading.Event], Any],
    command: str,
    resume: str | None = None,
    restart: str | None = None,
) -> tuple[P, Any] | None:
    """Prepare the run, `announce` it (after a line saying where a `resume`d or `restart`ed run
    starts), then `train(plan, progress, cancel)` with the progress line and Ctrl-C checkpoints;
    a cancelled run exits 130 with the command that continues it (`command --resume RUN`).

    Under `accelerate launch` the main process prepares (records) the run and the others open it
    (`follow(run_id, resume_from)`, see `TrainingService.follow`); only the main one announces,
    shows progress and gets (plan, result) back - the others get None and print nothing."""
    plan = prepared_on_main(prepare, follow)
    main = is_main()
    if main:
        if resume or restart:
            start = plan.resume_from.name if plan.resume_from else "step 0"
            click.echo(f"{'resuming' if resume else 'restarting'} run {plan.run.name!r} from {start}", err=True)
        announce(plan)
    with ctrl_c_checkpoints(main) as cancel:
        result = train(plan, show if main else None, cancel)
    if result.cancelled:
        if main:
            run = result.run
            click.echo(f"cancelled at step {run.step}/{run.total_steps}; continue with: {command} --resume {run.name}", err=True)
        raise SystemExit(130)
    return (plan, result) if main else None
