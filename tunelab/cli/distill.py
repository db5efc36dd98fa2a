"""`tunelab bank distill`: a teacher's answers to unlabelled inputs become a bank a student trains on."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, apply_engine_options, engine_options, pass_app
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.runtime.distill import DistillProgress, DistillSpec, plan_distillation, run_distillation


@click.command("distill")
@click.argument("name")
@click.option("--teacher", "-t", required=True, help="The arm that answers: model:NAME, base+embedding@8, lora:NAME, ...")
@click.option("--inputs", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Text file, one input per line, or JSONL.")
@click.option("--input-field", default=None, help="JSONL field holding the input (default: input, prompt, question, text).")
@click.option("--from-bank", default=None, help="Relabel this bank's train inputs (its test split is never used).")
@click.option(
    "--bank", "-b", "examples_bank", default=None, help="Bank of the ICL teacher's examples and instruction (default: --from-bank)."
)
@click.option("--instruction", default=None, help="Instruction for a new bank without --bank / --from-bank.")
@click.option(
    "--test-size", type=float, default=0.0, show_default=True, help="Share of a new bank held out (0: evaluate on the source bank)."
)
@click.option("--limit", type=int, default=None, help="Only the first N inputs.")
@click.option("--max-tokens", type=int, default=None, help="Reply length (default: 16 for a label task, 256 otherwise).")
@engine_options
@pass_app
def command(
    app: AppContext,
    name: str,
    teacher: str,
    inputs: Path | None,
    input_field: str | None,
    from_bank: str | None,
    examples_bank: str | None,
    instruction: str | None,
    test_size: float,
    limit: int | None,
    max_tokens: int | None,
    **kwargs: object,
) -> None:
    """Create or extend bank NAME with a teacher's answers (greedy; rerun to resume).

    Evaluate the student trained on NAME on the source bank's test split: `tunelab compare --bank
    SOURCE --adapter STUDENT` with the teacher as an arm shows how close the student gets to it.
    """
    apply_engine_options(app, kwargs)
    if max_tokens is not None and max_tokens < 1:
        raise TunelabError(f"--max-tokens must be >= 1 (got {max_tokens})")
    spec = DistillSpec(name, Arm.parse(teacher), from_bank, inputs, input_field, examples_bank, instruction, test_size, limit, max_tokens)
    plan = plan_distillation(app.runtime, spec)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"distilling {len(plan.inputs)} input(s) of {plan.job.source} with {plan.teacher.name} into bank {name!r}", err=True)
    if plan.stored:
        click.echo(f"resuming: {plan.stored} answer(s) already stored", err=True)
    # the bar counts only what is left, so its ETA is measured on answers generated now
    with click.progressbar(length=len(plan.inputs) - plan.stored, label=plan.teacher.name, file=sys.stderr, show_pos=True) as bar:

        def progress(event: DistillProgress) -> None:
            bar.update(event.generated - bar.pos)

        try:
            result = run_distillation(plan, progress)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: every answer so far is stored; run the same command again to resume", err=True)
            sys.exit(130)
    bank = result.bank
    reused = f", reused {result.reused} stored" if result.reused else ""
    off = f"; {result.off_label} answer(s) named no label and were stored as replied" if result.off_label else ""
    click.echo(f"bank {bank.name!r}: {result.generated} new answer(s){reused}; now {bank.n_train} train / {bank.n_test} test{off}")
    click.echo(f"train a student: tunelab train STUDENT --bank {bank.name}", err=True)
