"""`tunelab history`: list, show, export, rename and delete conversations."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.stores.conversations import ConversationStore
from tunelab.stores.export import conversation_json, conversation_markdown
from tunelab.stores.files import atomic_write_text


@click.group("history", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """List and export conversations."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_conversations)


@command.command("list")
@pass_app
def list_conversations(app: AppContext) -> None:
    """One line per conversation, newest first."""
    store = ConversationStore(app.conn)
    for conv in store.list():
        count = len(store.messages(conv.id))
        click.echo(f"{conv.id:>5}  {conv.updated_at[:19]}  {count:>3} msgs  {conv.title}")


@command.command("show")
@click.argument("conversation_id", type=int)
@pass_app
def show(app: AppContext, conversation_id: int) -> None:
    """Print a conversation as Markdown."""
    click.echo(conversation_markdown(ConversationStore(app.conn), conversation_id))


@command.command("export")
@click.argument("conversation_id", type=int, required=False)
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="File to write (default stdout).")
@pass_app
def export(app: AppContext, conversation_id: int | None, fmt: str, output: Path | None) -> None:
    """Export one conversation (or all, as JSON) with provenance."""
    store = ConversationStore(app.conn)
    if conversation_id is None:
        if fmt != "json":
            raise click.UsageError("exporting all conversations needs --format json")
        text = json.dumps([conversation_json(store, c.id) for c in store.list()], indent=2, ensure_ascii=False)
    elif fmt == "json":
        text = json.dumps(conversation_json(store, conversation_id), indent=2, ensure_ascii=False)
    else:
        text = conversation_markdown(store, conversation_id)
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


@command.command("rename")
@click.argument("conversation_id", type=int)
@click.argument("title")
@pass_app
def rename(app: AppContext, conversation_id: int, title: str) -> None:
    """Give a conversation a new title."""
    ConversationStore(app.conn).update(conversation_id, title=title)


@command.command("delete")
@click.argument("conversation_id", type=int)
@pass_app
def delete(app: AppContext, conversation_id: int) -> None:
    """Delete a conversation and its messages."""
    ConversationStore(app.conn).delete(conversation_id)
    click.echo(f"deleted conversation {conversation_id}")
