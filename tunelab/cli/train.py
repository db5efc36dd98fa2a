"""`tunelab train`: a LoRA SFT run on a bank's train split (or continued pre-training on raw text with
--corpus), with a live progress line; Ctrl-C checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.cli.training import dataclass_options, given_values, run_options, train_until_done, where
from tunelab.runtime.training import SFTArgs, TrainingService, TrainRequest, device, measured_change, method

if TYPE_CHECKING:
    from tunelab.finetune.lifecycle import Plan, TrainResult


@click.command("train")
@click.argument("name", required=False)
@click.option("--bank", "-b", default=None, help="Example bank to train on (its train split only).")
@click.option(
    "--corpus",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Continued pre-training instead: a .txt/.md file or a folder of them (loss on every token).",
)
@click.option(
    "--held-out", type=float, default=0.1, show_default=True, help="--corpus: share of the text blocks kept out to measure perplexity."
)
@click.option(
    "--train-embeddings", is_flag=True, help="--corpus: also train embeddings and LM head (refused: llama.cpp adapters cannot carry them)."
)
@click.option(
    "--on", "on", default=None, metavar="ADAPTER", help="Train this SFT / pre-training adapter further (e.g. SFT after --corpus)."
)
@run_options
@dataclass_options(SFTArgs)
@pass_app
def command(
    app: AppContext,
    name: str | None,
    bank: str | None,
    corpus: Path | None,
    held_out: float,
    train_embeddings: bool,
    on: str | None,
    resume: str | None,
    restart: str | None,
    model: str | None,
    hf_dir: Path | None,
    **kwargs: Any,
) -> None:
    """Fine-tune a LoRA adapter NAME on --bank BANK, or pre-train it on --corpus TEXT (Ctrl-C saves a checkpoint; --resume NAME continues)."""
    service = TrainingService(app.settings, app.conn)
    request = TrainRequest(
        name, bank, corpus, held_out, train_embeddings, on, model, hf_dir, given_values(SFTArgs, kwargs), resume, restart
    )

    done = train_until_done(
        lambda: service.plan_train(request), service.follow_train, announce, service.train, "tunelab train", resume, restart
    )
    if done is not None:  # None: another process of an `accelerate launch`, the main one reports
        report(done[1])


def announce(plan: Plan) -> None:
    """The run's first lines on stderr: warnings, then what it trains on and where."""
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"training {plan.run.name!r} on {describe(plan)} ({where(device())})", err=True)


def report(result: TrainResult) -> None:
    """The finished run: its loss, speed and memory, and what to do with the adapter."""
    run = result.run
    assert result.adapter is not None
    metrics = result.adapter.metrics
    click.echo(
        f"adapter {result.adapter.name!r}: loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} in {metrics['steps']} steps, "
        f"{run.train_seconds:.0f}s, {run.tokens_per_s or 0:.0f} tok/s"
        + (f", peak {run.peak_memory_mb:.0f} MiB" if run.peak_memory_mb else "")
    )
    if "held_out_ppl_before" in metrics:
        click.echo(f"{measured_change(metrics)} on {metrics['held_out_blocks']} block(s)")
        click.echo(f"fine-tune on top: tunelab train NAME --bank BANK --on {result.adapter.name}")
    click.echo(f"chat with it: tunelab chat --adapter {result.adapter.name} 'your prompt'")


def describe(plan: Plan) -> str:
    """What a run trains on, for its first line."""
    on = f" on top of adapter {plan.start_adapter.name!r}" if plan.start_adapter else ""
    if method(plan.method).token_blocks:
        tokens = len(plan.rows) * plan.args.max_length
        return f"{len(plan.rows)} text blocks ({tokens} tokens, {len(plan.held_out)} block(s) held out){on}"
    return f"{len(plan.rows)} train examples of {plan.run.bank!r}{on}"
