"""`tunelab chat`: one reply streamed to stdout, for scripts and quick questions."""

from __future__ import annotations

import json
import sys

import click

from tunelab.cli.app_context import AppContext, apply_engine_options, engine_options, pass_app
from tunelab.cli.options import sampler_from, sampler_options
from tunelab.engine.chat_service import ChatService
from tunelab.errors import TunelabError


@click.command("chat")
@click.argument("prompt")
@click.option("--system", "-s", default=None, help="System prompt (for a new conversation).")
@click.option("--conversation", "-c", type=int, default=None, help="Continue this conversation id.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record (text, stats, ids) instead of streaming.")
@click.option("--adapter", "-a", default=None, help="Serve a trained LoRA adapter (see `tunelab adapters`).")
@click.option("--adapter-scale", type=float, default=1.0, show_default=True, help="Strength of the adapter (0 = off).")
@engine_options
@sampler_options
@pass_app
def command(app: AppContext, prompt: str, system: str | None, conversation: int | None, as_json: bool,
            adapter: str | None, adapter_scale: float, **kwargs: object) -> None:
    """Send PROMPT ('-' reads stdin) and stream the reply."""
    apply_engine_options(app, kwargs)
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise TunelabError("empty prompt: give the text to send (or '-' to read stdin)")
    service = ChatService(app.settings, app.conn)
    if adapter:
        from tunelab.cli.adapters import attach_adapter

        attach_adapter(service, app.conn, adapter, adapter_scale)
    if conversation is None:
        conv = service.store.create(title=prompt.strip().splitlines()[0][:60], system_prompt=system or "")
    else:
        conv = service.store.get(conversation)
        if system is not None:
            service.store.update(conv.id, system_prompt=system)
    params = sampler_from(kwargs, base=conv.params)
    turn = service.send(conv.id, prompt, params)
    try:
        for chunk in turn.reply:
            if not as_json:
                click.echo(chunk, nl=False)
                sys.stdout.flush()
    except KeyboardInterrupt:
        turn.reply.close()
        message = turn.save()
        click.echo(f"\ninterrupted: partial reply saved as message {message.id} in conversation {conv.id}", err=True)
        sys.exit(130)
    message = turn.save()
    stats = turn.reply.stats
    if as_json:
        record = {"conversation_id": conv.id, "message_id": message.id, "text": message.content,
                  "model": message.model_path, "model_sha256": message.model_sha256,
                  "params": message.params, "stats": stats.to_dict()}
        click.echo(json.dumps(record, ensure_ascii=False))
        return
    click.echo()
    if stats.dropped_turns:
        click.echo(f"[dropped {stats.dropped_turns} oldest message(s) to fit the context window]", err=True)
    tps = f"{stats.decode_tps:.1f} tok/s" if stats.decode_tps else "-"
    click.echo(
        f"[conversation {conv.id} · {stats.prompt_tokens} prompt + {stats.completion_tokens} tokens · "
        f"TTFT {stats.ttft_ms or 0:.0f} ms · {tps} · {stats.finish_reason}]",
        err=True,
    )
