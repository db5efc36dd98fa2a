"""`tunelab models`: the bundled model and the GGUF files the user registered."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.stores.models import ModelRegistry


@click.group("models", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """List known models (bundled + registered)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_models)


@command.command("list")
@pass_app
def list_models(app: AppContext) -> None:
    """List known models."""
    default = app.settings.model
    for entry in ModelRegistry(app.conn).list():
        mark = "*" if default in ("", entry.name) and (default or entry.source == "bundled") else " "
        size = f"{entry.path.stat().st_size / 1e6:.0f} MB" if entry.path.exists() else "missing"
        click.echo(f"{mark} {entry.name:<24} {entry.source:<10} {size:>8}  {entry.path}")


@command.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@pass_app
def add_model(app: AppContext, name: str, path: Path) -> None:
    """Register a GGUF file under NAME (use it with --model NAME)."""
    entry = ModelRegistry(app.conn).add(name, path)
    click.echo(f"registered {entry.name} -> {entry.path}")
