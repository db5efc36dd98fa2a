"""`tunelab train`: a LoRA SFT run on a bank's train split, with a live progress line; Ctrl-C checkpoints."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.errors import TunelabError
from tunelab.finetune.args import SFTArgs, field_docs
from tunelab.finetune.progress import TrainProgress

FLAG_NAMES = {"r": "--r", "alpha": "--alpha", "dropout": "--dropout", "lr": "--lr"}


def sft_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per SFTArgs field, help from the field's docstring, so flags and dataclass can't drift."""
    docs = field_docs(SFTArgs)
    for f in reversed(fields(SFTArgs)):
        name = FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not MISSING else None
        help_text = f"{docs.get(f.name, '')} (default {default})"
        if f.type == "bool":
            flag = f"{name}/--no-{name[2:]}"
            func = click.option(flag, f.name, default=None, help=help_text)(func)
        elif f.name == "target_modules":
            func = click.option(name, f.name, default=None, help=f"{help_text}; comma-separated")(func)
        else:
            kind = {"int": int, "float": float, "int | None": int}[str(f.type)]
            func = click.option(name, f.name, type=kind, default=None, help=help_text)(func)
    return func


def args_from(kwargs: dict[str, Any]) -> SFTArgs:
    values = {k: v for k, v in kwargs.items() if v is not None}
    if isinstance(values.get("target_modules"), str):
        values["target_modules"] = tuple(m.strip() for m in values["target_modules"].split(",") if m.strip())
    return SFTArgs(**values)


def show(event: TrainProgress) -> None:
    loss = f"loss {event.loss:.4f}" if event.loss is not None else "loss -"
    tps = f"{event.tokens_per_s:.0f} tok/s" if event.tokens_per_s else "- tok/s"
    eta = f"ETA {event.eta_s:.0f}s" if event.eta_s is not None else "ETA -"
    width = 24
    filled = int(width * event.step / max(1, event.total))
    bar = "#" * filled + "-" * (width - filled)
    click.echo(f"\r[{bar}] {event.step}/{event.total} · {loss} · lr {event.lr or 0:.2e} · {tps} · {eta}   ", nl=False, err=True)


@click.command("train")
@click.argument("name", required=False)
@click.option("--bank", "-b", default=None, help="Example bank to train on (its train split only).")
@click.option("--resume", "resume", default=None, metavar="RUN", help="Continue a cancelled or failed run from its last checkpoint.")
@click.option("--model", "-m", default=None, help="Base GGUF (path or registered name); default: the chat model.")
@click.option("--hf-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="HF checkpoint of the same model (default: dequantise the GGUF).")
@sft_options
@pass_app
def command(app: AppContext, name: str | None, bank: str | None, resume: str | None, model: str | None, hf_dir: Path | None, **kwargs: Any) -> None:
    """Fine-tune a LoRA adapter NAME on --bank BANK (Ctrl-C saves a checkpoint; --resume NAME continues)."""
    from tunelab.finetune import sft

    if resume:
        if name or bank or any(v is not None for v in kwargs.values()):
            raise TunelabError("--resume continues a run with its own settings: give only --resume RUN")
        plan = sft.prepare_resume(app.settings, app.conn, resume)
        click.echo(f"resuming run {plan.run.name!r} from {plan.resume_from.name if plan.resume_from else '-'}", err=True)
    else:
        if not name or not bank:
            raise TunelabError("give a NAME for the adapter and --bank BANK (or --resume RUN)")
        plan = sft.prepare(app.settings, app.conn, name, bank, args_from(kwargs), model, hf_dir)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"training {plan.run.name!r} on {len(plan.rows)} train examples of {plan.run.bank!r} ({sft.device()})", err=True)
    cancel = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        click.echo("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort at once)", err=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = sft.train(plan, show, cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
        click.echo(err=True)
    run = result.run
    if result.cancelled:
        click.echo(f"cancelled at step {run.step}/{run.total_steps}; continue with: tunelab train --resume {run.name}", err=True)
        raise SystemExit(130)
    assert result.adapter is not None
    metrics = result.adapter.metrics
    click.echo(
        f"adapter {result.adapter.name!r}: loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} in {metrics['steps']} steps, "
        f"{run.train_seconds:.0f}s, {run.tokens_per_s or 0:.0f} tok/s" + (f", peak {run.peak_memory_mb:.0f} MiB" if run.peak_memory_mb else "")
    )
    click.echo(f"chat with it: tunelab chat --adapter {result.adapter.name} 'your prompt'")
