"""`tunelab compare` (arms x held-out items -> report) and `tunelab reports` (past comparisons)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, apply_engine_options, engine_options, pass_app
from tunelab.cli.options import sampler_from, sampler_options
from tunelab.cli.output import echo_json, json_option, limit_option
from tunelab.eval.arms import DEFAULT_K, SELECTOR_KINDS
from tunelab.eval.report import REPORT_MD, load_report
from tunelab.runtime.arm_runner import default_max_tokens, greedy
from tunelab.runtime.compare import Progress
from tunelab.runtime.comparisons import CompareSpec, ComparisonService


@click.command("compare")
@click.option("--bank", "-b", required=True, help="Example bank whose test split is compared.")
@click.option(
    "--adapter", "-a", "adapters", multiple=True, help="LoRA adapter to include (repeatable; default: the newest trained on the bank)."
)
@click.option("--no-adapter", is_flag=True, help="Compare base-model arms only.")
@click.option(
    "--selectors", default=",".join(SELECTOR_KINDS), show_default=True, help="ICL selectors, comma-separated ('' for zero-shot only)."
)
@click.option("--k", type=int, default=DEFAULT_K, show_default=True, help="Examples per prompt for ICL arms.")
@click.option(
    "--arm",
    "explicit_arms",
    multiple=True,
    metavar="ARM",
    help="Compare exactly these arms instead of the grid (repeatable): base, base+embedding@8, lora:NAME, model:TEACHER; add +plan or +extract to work through intermediate steps, or ~cached after k (base+embedding@4~cached) for examples from the example cache.",
)
@click.option("--limit", type=int, default=None, help="Use only the first N test items.")
@click.option(
    "--test-file",
    type=click.Path(path_type=Path),
    default=None,
    help="JSONL test items (same fields as a bank) instead of the bank's test split.",
)
@click.option(
    "--reward-model",
    default=None,
    metavar="NAME",
    help="Add a column of this reward model's scores (see `tunelab feedback train --method reward`).",
)
@engine_options
@sampler_options(greedy(default_max_tokens([])), {"max_tokens": "16 for a bank with labels, 256 otherwise"})
@pass_app
def command(
    app: AppContext,
    bank: str,
    adapters: tuple[str, ...],
    no_adapter: bool,
    selectors: str,
    k: int,
    explicit_arms: tuple[str, ...],
    limit: int | None,
    test_file: Path | None,
    reward_model: str | None,
    **kwargs: object,
) -> None:
    """Compare base, base+ICL, LoRA and LoRA+ICL on held-out items, with CIs and a report.

    Sampling is greedy with a fixed seed, so arms differ by their setup and not by sampling
    luck. Rerunning the same command resumes an interrupted comparison and reuses every
    finished answer.
    """
    apply_engine_options(app, kwargs)
    service = ComparisonService(app.runtime)
    spec = CompareSpec(bank, adapters, no_adapter, selectors, k, explicit_arms, limit, test_file, reward_model)
    prepared = service.prepare(spec, warn=lambda warning: click.echo(f"warning: {warning}", err=True))
    params = sampler_from(kwargs, base=greedy(default_max_tokens(prepared.bank.labels)).to_dict())
    arms, test_set = prepared.arms, prepared.test_set
    click.echo(
        f"comparing {len(arms)} arms x {len(test_set.items)} items of {test_set.source}: {', '.join(a.name for a in arms)}", err=True
    )
    reused = 0
    with click.progressbar(length=prepared.steps, label="generating", file=sys.stderr, show_pos=True) as bar:

        def progress(event: Progress) -> None:
            nonlocal reused
            reused += event.reused
            bar.label = event.arm
            bar.update(1)

        try:
            _, path = service.run(prepared, params, progress)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished items are stored; run the same command again to resume", err=True)
            sys.exit(130)
    if reused:
        click.echo(f"reused {reused} stored answers", err=True)
    click.echo((path / REPORT_MD).read_text(encoding="utf-8"))
    click.echo(f"report: {path}", err=True)


@click.group("reports", invoke_without_command=True)
@click.pass_context
def reports(ctx: click.Context) -> None:
    """List past comparisons and show their reports."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_reports)


@reports.command("list")
@limit_option
@json_option
@pass_app
def list_reports(app: AppContext, limit: int | None, as_json: bool) -> None:
    """One line per comparison, newest first."""
    records = ComparisonService(app.runtime).reports(limit)
    if as_json:
        echo_json(records)
        return
    for r in records:
        line = f"{r['id']:>4}  {r['updated_at'][:19]}  {r['status']:<7}  {r['bank']:<16} {len(r['arms'])} arms"
        if r["report_dir"]:
            line += f"  {r['n_items']} items  {r['verdict'][0] if r['verdict'] else ''}"
        click.echo(line)


@reports.command("show")
@click.argument("comparison_id", type=int)
@json_option
@pass_app
def show_report(app: AppContext, comparison_id: int, as_json: bool) -> None:
    """Print a comparison's report.md (or, with --json, its report.json: every number) and where its files are."""
    comparison, path = ComparisonService(app.runtime).report(comparison_id)
    if as_json:
        echo_json({"comparison": asdict(comparison), "report": load_report(path)})
    else:
        click.echo((path / REPORT_MD).read_text(encoding="utf-8"))
    click.echo(f"report: {path}", err=True)


@reports.command("delete")
@click.argument("comparison_id", type=int)
@pass_app
def delete_report(app: AppContext, comparison_id: int) -> None:
    """Delete comparison COMPARISON_ID: its stored answers and its report folder."""
    removed = ComparisonService(app.runtime).delete(comparison_id)
    click.echo(f"deleted comparison {comparison_id}" + (f" and {', '.join(map(str, removed))}" if removed else ""))
