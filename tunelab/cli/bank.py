"""`tunelab bank`: import, inspect, export and delete example banks; index them for embeddings."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tunelab.cli.app_context import AppContext, Command, pass_app
from tunelab.cli.output import echo_json, json_option, limit_option, limited
from tunelab.runtime.banks import DEMO_NAMES, TEST_SIZE, BankService
from tunelab.text import one_line

if TYPE_CHECKING:
    from tunelab.stores.banks import Bank, ImportResult


@click.group("bank", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Example banks: the examples ICL picks from and LoRA trains on (train split only)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_banks)


def file_options(func: Command) -> Command:
    func = click.option("--strict", is_flag=True, help="Abort (importing nothing) if any line is bad.")(func)
    func = click.option("--output-field", default=None, help="Field holding the output (default: recognised names).")(func)
    func = click.option("--input-field", default=None, help="Field holding the input (default: recognised names).")(func)
    return func


def split_options(func: Command) -> Command:
    func = click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/test split.")(func)
    func = click.option(
        "--test-size",
        type=float,
        default=TEST_SIZE,
        show_default=True,
        help="Share of examples held out for testing (never shown to ICL or training).",
    )(func)
    return func


def banks(app: AppContext) -> BankService:
    return BankService(app.settings, app.conn)


def warn(text: str) -> None:
    click.echo(text, err=True)


def report(result: ImportResult) -> None:
    bank = result.bank
    dupes = f", {result.duplicates} duplicate(s) ignored" if result.duplicates else ""
    click.echo(
        f"bank {bank.name!r}: added {result.added} example(s) ({result.added_test} to test){dupes}; "
        f"now {bank.n_train} train / {bank.n_test} test" + (f"; labels: {', '.join(bank.labels)}" if bank.labels else "")
    )


@command.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--system", "--instruction", "instruction", default=None, help="Instruction for the task (goes into the system prompt).")
@file_options
@split_options
@pass_app
def import_bank(
    app: AppContext,
    name: str,
    file: Path,
    instruction: str | None,
    input_field: str | None,
    output_field: str | None,
    strict: bool,
    test_size: float,
    seed: int,
) -> None:
    """Create bank NAME from a JSONL or CSV FILE (input/output, prompt/completion, question/answer, text/label, messages)."""
    report(banks(app).import_file(name, file, instruction, input_field, output_field, strict, test_size, seed, warn))


@command.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@file_options
@pass_app
def add(app: AppContext, name: str, file: Path, input_field: str | None, output_field: str | None, strict: bool) -> None:
    """Add the examples of FILE to bank NAME (new ones are split with the bank's seed and test share)."""
    report(banks(app).add_file(name, file, input_field, output_field, strict, warn))


@command.command("import-demo")
@click.argument("demo", type=click.Choice(DEMO_NAMES))
@click.option("--name", default=None, help="Bank name (default: the demo's name).")
@click.option("--size", type=int, default=None, help="Number of examples (sentiment: default 400; qa: all; longdoc: 60).")
@click.option("--language", default="english", show_default=True, help="qa only: a chatterbot-corpus language (e.g. chinese).")
@split_options
@pass_app
def import_demo(app: AppContext, demo: str, name: str | None, size: int | None, language: str, test_size: float, seed: int) -> None:
    """Import a packaged demo bank: `sentiment` (Rotten Tomatoes reviews), `qa` (chatterbot-corpus) or
    `longdoc` (generated long documents with a planted fact)."""
    report(banks(app).import_demo(demo, name, size, language, test_size, seed))


@command.command("list")
@limit_option
@json_option
@pass_app
def list_banks(app: AppContext, limit: int | None, as_json: bool) -> None:
    """List banks with their split sizes."""
    found = limited(banks(app).banks(), limit)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no banks yet: `tunelab bank import NAME FILE` or `tunelab bank import-demo sentiment`")
    for bank in found:
        labels = f"  labels: {', '.join(bank.labels)}" if bank.labels else ""
        click.echo(f"{bank.name:<20} {bank.n_train:>6} train {bank.n_test:>5} test  {bank.created_at[:10]}{labels}")


@command.command("show")
@click.argument("name")
@click.option("--split", type=click.Choice(["train", "test"]), default=None, help="Only this split.")
@click.option("-n", "--limit", type=click.IntRange(min=0), default=10, show_default=True, help="Examples to print (0 = all).")
@json_option
@pass_app
def show(app: AppContext, name: str, split: str | None, limit: int, as_json: bool) -> None:
    """Print a bank's settings and its first examples."""
    service = banks(app)
    bank = service.get(name)
    examples = service.examples(name, split)
    if as_json:
        echo_json({**asdict(bank), "examples": limited(examples, limit)})
        return
    click.echo(describe(bank))
    for example in examples[: limit or None]:
        click.echo(f"\n#{example.id} [{example.split}]\n  in:  {one_line(example.input)}\n  out: {one_line(example.output)}")
    if limit and len(examples) > limit:
        click.echo(f"\n... {len(examples) - limit} more (--limit 0 shows all)")


def describe(bank: Bank) -> str:
    lines = [
        f"bank {bank.name}: {bank.n_train} train / {bank.n_test} test (test share {bank.test_size:g}, seed {bank.seed})",
        f"instruction: {bank.instruction or '(none)'}",
        f"source: {bank.source or '-'}",
    ]
    if bank.labels:
        lines.append(f"labels: {', '.join(bank.labels)}")
    return "\n".join(lines)


@command.command("export")
@click.argument("name")
@click.option("--split", type=click.Choice(["train", "test"]), default=None, help="Only this split.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File (default stdout).")
@pass_app
def export(app: AppContext, name: str, split: str | None, fmt: str, output: Path | None) -> None:
    """Write a bank's examples (id, input, output, split) as JSONL or CSV."""
    written = banks(app).export(name, split, fmt, output)
    if output is None:
        click.echo(written.text, nl=False)
    else:
        click.echo(f"wrote {written.examples} example(s) to {output}", err=True)


@command.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
@pass_app
def delete(app: AppContext, name: str, yes: bool) -> None:
    """Delete bank NAME, its examples and its embedding index (runs and reports keep their records)."""
    service = banks(app)
    if not yes:
        bank = service.get(name)
        click.confirm(f"delete bank {name!r} ({bank.n_train + bank.n_test} examples)?", abort=True)
    if note := service.delete(name):
        click.echo(f"note: {note}", err=True)
    click.echo(f"deleted bank {name!r}")


@command.command("index")
@click.argument("name")
@pass_app
def index(app: AppContext, name: str) -> None:
    """Embed bank NAME's train split into Chroma now (otherwise done on first use); only new examples are embedded."""
    service = banks(app)
    with click.progressbar(length=service.get(name).n_train, label="embedding", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        bank, embedded = service.index(name, progress)
    click.echo(f"bank {name!r}: {embedded} example(s) embedded, {bank.n_train} in the index")
