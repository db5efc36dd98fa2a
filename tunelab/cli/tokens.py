"""`tunelab tokens`: how text splits into the chat model's tokens, or what a stored reply's prompt cost."""

from __future__ import annotations

import sys

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.errors import TunelabError
from tunelab.runtime.models import ModelService
from tunelab.runtime.tokens import Piece, PromptView, prompt_view, text_pieces


def visible(text: str) -> str:
    """A piece quoted on one line: newlines and tabs as escapes, everything else (CJK included) as is."""
    return "'" + text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + "'"


def piece_lines(pieces: list[Piece]) -> list[str]:
    lines = []
    for piece in pieces:
        ids = "+".join(str(i) for i in piece.ids)
        split = f"  ({len(piece.ids)} tokens: one character split across them)" if len(piece.ids) > 1 else ""
        lines.append(f"{ids:>12}  {visible(piece.text)}{split}")
    return lines


def show_prompt(view: PromptView) -> None:
    for part in view.parts:
        click.echo(f"── {part.label} · {part.tokens} tokens ──")
        for line in piece_lines(part.pieces):
            click.echo(line)
    totals = " · ".join(f"{kind} {n}" for kind, n in view.totals().items())
    click.echo(f"prompt: {view.tokens} tokens ({totals})")
    if view.stored_tokens is not None and view.stored_tokens != view.tokens:
        click.echo(f"note: the reply recorded {view.stored_tokens} prompt tokens (another model, or old turns dropped)", err=True)
    click.echo(f"reply #{view.message_id}: {sum(len(p.ids) for p in view.reply)} tokens")


@click.command("tokens")
@click.argument("text", required=False)
@click.option(
    "--prompt",
    "message_id",
    type=int,
    default=None,
    metavar="MESSAGE_ID",
    help="Show the whole prompt a stored reply was generated from, with the tokens of each part.",
)
@click.option("--model", "-m", default=None, help="GGUF whose tokenizer to use (path or registered name; default: the chat model).")
@pass_app
def command(app: AppContext, text: str | None, message_id: int | None, model: str | None) -> None:
    """Print each token of TEXT ('-' reads stdin) with its id, and the count."""
    from tunelab.engine.llama_engine import LlamaEngine

    if (text is None) == (message_id is None):
        raise TunelabError("give TEXT (or '-' for stdin), or --prompt MESSAGE_ID")
    if text == "-":
        text = sys.stdin.read()
    path = ModelService(app.settings, app.conn).tokenizer_model(model, message_id)
    engine = LlamaEngine(path, n_ctx=app.settings.n_ctx, n_gpu_layers=0, n_threads=app.settings.n_threads)
    if message_id is not None:
        show_prompt(prompt_view(app.conn, engine, message_id))
        return
    assert text is not None
    pieces = text_pieces(engine.llama, text)
    for line in piece_lines(pieces):
        click.echo(line)
    click.echo(f"{sum(len(p.ids) for p in pieces)} tokens ({path.name})")
