"""`tunelab models`: the bundled model and the GGUF files the user registered."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.cli.output import echo_json, json_option, limit_option
from tunelab.runtime.models import ModelService


@click.group("models", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """List known models (bundled + registered)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_models)


@command.command("list")
@limit_option
@json_option
@pass_app
def list_models(app: AppContext, limit: int | None, as_json: bool) -> None:
    """List known models (* = the default chat model)."""
    records = ModelService(app.settings, app.conn).records(limit)
    if as_json:
        echo_json(records)
        return
    for r in records:
        if r["install"]:
            click.echo(f"  {r['name']:<24} {r['source']:<10} {'':>8}  not installed: {r['install']}")
            continue
        size = (
            f"{r['size_bytes'] / 1e6:.0f} MB" if r["size_bytes"] is not None else ("first use" if r["source"] == "package" else "missing")
        )
        click.echo(f"{'*' if r['default'] else ' '} {r['name']:<24} {r['source']:<10} {size:>8}  {r['path']}")


@command.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@pass_app
def add_model(app: AppContext, name: str, path: Path) -> None:
    """Register a GGUF file under NAME (use it with --model NAME)."""
    entry = ModelService(app.settings, app.conn).add(name, path)
    click.echo(f"registered {entry.name} -> {entry.path}")
