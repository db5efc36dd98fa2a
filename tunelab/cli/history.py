"""`tunelab history`: list, search, show, export, rename and delete conversations."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.cli.output import echo_json, json_option, limit_option
from tunelab.runtime.conversations import ConversationService
from tunelab.text import one_line


@click.group("history", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """List and export conversations."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_conversations)


@command.command("list")
@limit_option
@json_option
@pass_app
def list_conversations(app: AppContext, limit: int | None, as_json: bool) -> None:
    """One line per conversation, newest first."""
    rows = ConversationService(app.conn).with_message_counts(limit)
    if as_json:
        echo_json([{**asdict(conv), "message_count": count} for conv, count in rows])
        return
    for conv, count in rows:
        click.echo(f"{conv.id:>5}  {conv.updated_at[:19]}  {count:>3} msgs  {conv.title}")


@command.command("search")
@click.argument("text")
@limit_option
@json_option
@pass_app
def search(app: AppContext, text: str, limit: int | None, as_json: bool) -> None:
    """Messages containing every word of TEXT (full-text, word prefixes match), best match first."""
    hits = ConversationService(app.conn).search(text, limit)
    if as_json:
        echo_json(hits)
        return
    if not hits:
        click.echo(f"no message matches {text!r}", err=True)
    for hit in hits:
        m = hit.message
        click.echo(f"{m.conversation_id:>5}  #{m.id:<6} {m.role:<9} {hit.conversation_title[:30]:<30}  {one_line(hit.snippet)}")


@command.command("show")
@click.argument("conversation_id", type=int)
@json_option
@pass_app
def show(app: AppContext, conversation_id: int, as_json: bool) -> None:
    """Print a conversation as Markdown (or JSON with every message's provenance)."""
    conversations = ConversationService(app.conn)
    if as_json:
        echo_json(conversations.as_json(conversation_id))
        return
    click.echo(conversations.as_markdown(conversation_id))


@command.command("export")
@click.argument("conversation_id", type=int, required=False)
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="File to write (default stdout).")
@pass_app
def export(app: AppContext, conversation_id: int | None, fmt: str, output: Path | None) -> None:
    """Export one conversation (or all, as JSON) with provenance."""
    if conversation_id is None and fmt != "json":
        raise click.UsageError("exporting all conversations needs --format json")
    text = ConversationService(app.conn).export(conversation_id, fmt, output)
    if output:
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


@command.command("rename")
@click.argument("conversation_id", type=int)
@click.argument("title")
@pass_app
def rename(app: AppContext, conversation_id: int, title: str) -> None:
    """Give a conversation a new title."""
    ConversationService(app.conn).rename(conversation_id, title)


@command.command("delete")
@click.argument("conversation_id", type=int)
@pass_app
def delete(app: AppContext, conversation_id: int) -> None:
    """Delete a conversation and its messages."""
    ConversationService(app.conn).delete(conversation_id)
    click.echo(f"deleted conversation {conversation_id}")
