"""`tunelab chat`: one reply streamed to stdout, for scripts and quick questions."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from tunelab.cli.app_context import AppContext, apply_engine_options, engine_options, pass_app
from tunelab.cli.options import sampler_from, sampler_options
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.icl.selectors import KINDS
from tunelab.runtime.chat_service import ChatService, ChatTurn, IclRequest
from tunelab.text import one_line

if TYPE_CHECKING:
    from tunelab.engine.reply import ReplyStats
    from tunelab.icl.selectors import IndexProgress
    from tunelab.runtime.best_of_n import BestOfRequest
    from tunelab.stores.conversations import Message


@click.command("chat")
@click.argument("prompt")
@click.option("--system", "-s", default=None, help="System prompt (for a new conversation).")
@click.option("--conversation", "-c", type=int, default=None, help="Continue this conversation id.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record (text, stats, ids) instead of streaming.")
@click.option("--adapter", "-a", default=None, help="Serve a trained LoRA adapter (see `tunelab adapters`).")
@click.option("--adapter-scale", type=float, default=1.0, show_default=True, help="Strength of the adapter (0 = off).")
@click.option("--bank", "-b", default=None, help="In-context learning: put examples from this bank in the prompt.")
@click.option("--selector", type=click.Choice(KINDS), default=None, help="How examples are chosen (default embedding).")
@click.option("--k", type=int, default=None, help="Number of examples (default 4).")
@click.option("--show-examples", is_flag=True, help="Print the chosen examples with their scores (stderr).")
@click.option(
    "--icl-cache",
    is_flag=True,
    help="Take the examples' KV from the example cache (faster, approximate; icl_cache_recompute tokens each recomputed).",
)
@click.option(
    "--best-of",
    type=int,
    default=None,
    metavar="N",
    help="Sample N replies, keep the one the reward model scores highest (scores on stderr).",
)
@click.option(
    "--reward-model", default=None, metavar="NAME", help="Reward model for --best-of (default: the newest trained for this model)."
)
@click.option("--plan", is_flag=True, help="Plan first, work the plan step by step, then answer (the steps on stderr).")
@engine_options
@sampler_options(SamplerParams())
@pass_app
def command(
    app: AppContext,
    prompt: str,
    system: str | None,
    conversation: int | None,
    as_json: bool,
    adapter: str | None,
    adapter_scale: float,
    bank: str | None,
    selector: str | None,
    k: int | None,
    show_examples: bool,
    icl_cache: bool,
    best_of: int | None,
    reward_model: str | None,
    plan: bool,
    **kwargs: object,
) -> None:
    """Send PROMPT ('-' reads stdin) and stream the reply."""
    apply_engine_options(app, kwargs)
    icl = icl_request(bank, selector, k, show_examples, icl_cache)
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise TunelabError("empty prompt: give the text to send (or '-' to read stdin)")
    service = ChatService(app.runtime)
    params = sampler_from(kwargs, base=service.conversation(conversation).params if conversation is not None else None)
    pick = best_of_request(service, params, best_of, reward_model)  # refused options leave no empty conversation
    progress = index_progress(icl.bank) if icl is not None else None
    turn = service.start(conversation, prompt, params, icl, pick, system, plan, adapter, adapter_scale, progress)
    if pick is not None:
        assert turn.provenance.best_of is not None  # a reply picked by a reward model records its candidates
        report_candidates(turn.provenance.best_of)
        if not as_json:
            click.echo(turn.reply.so_far, nl=False)  # already generated: the loop below has nothing left to stream
    if icl is not None:
        report_examples(turn.provenance.to_dict()["icl"], show_examples)
    for step in turn.provenance.steps:
        click.echo(f"[{step.kind}] {step.output}", err=True)
    message = stream(turn, as_json)
    if as_json:
        click.echo(json.dumps(json_record(turn, message), ensure_ascii=False))
    else:
        report_stats(turn.conversation_id, turn.reply.stats)


def index_progress(bank: str) -> IndexProgress:
    """Embedding a bank's new examples on first use, on one stderr line."""
    return lambda done, total: click.echo(f"\r[embedding {bank}: {done}/{total}]", nl=done == total, err=True)


def stream(turn: ChatTurn, as_json: bool) -> Message:
    """Print the reply as it comes (not with --json) and store it; Ctrl-C or an engine error
    stores what came so far and exits."""
    try:
        for chunk in turn.reply:
            if not as_json:
                click.echo(chunk, nl=False)
                sys.stdout.flush()
    except KeyboardInterrupt:
        turn.reply.close()
        message = turn.save()
        click.echo(f"\ninterrupted: partial reply saved as message {message.id} in conversation {turn.conversation_id}", err=True)
        sys.exit(130)
    message = turn.save()
    if error := turn.reply.stats.error:
        click.echo(
            f"\n{error}: partial reply saved as message {message.id} in conversation {turn.conversation_id}, marked interrupted", err=True
        )
        sys.exit(1)
    return message


def json_record(turn: ChatTurn, message: Message) -> dict[str, Any]:
    """--json: the reply with its ids, stats and how it was made."""
    provenance = turn.provenance.to_dict()
    return {
        "conversation_id": turn.conversation_id,
        "message_id": message.id,
        "text": message.content,
        "model": message.model_path,
        "model_sha256": message.model_sha256,
        "params": message.params,
        "stats": turn.reply.stats.to_dict(),
        "icl": provenance["icl"],
        "best_of": turn.provenance.best_of,
        "steps": provenance["steps"],
    }


def report_stats(conversation_id: int, stats: ReplyStats) -> None:
    """After the streamed reply: what was dropped to fit, and the turn's tokens and speed (stderr)."""
    click.echo()
    if stats.dropped_turns:
        click.echo(f"[dropped {stats.dropped_turns} oldest message(s) to fit the context window]", err=True)
    tps = f"{stats.decode_tps:.1f} tok/s" if stats.decode_tps else "-"
    click.echo(
        f"[conversation {conversation_id} · {stats.prompt_tokens} prompt + {stats.completion_tokens} tokens · "
        f"TTFT {stats.ttft_ms or 0:.0f} ms · {tps} · {stats.finish_reason}]",
        err=True,
    )


def best_of_request(service: ChatService, params: SamplerParams, n: int | None, reward_model: str | None) -> BestOfRequest | None:
    """--best-of N [--reward-model NAME], checked before the reward model is loaded."""
    if n is None:
        if reward_model is not None:
            raise TunelabError("--reward-model scores --best-of N candidates: add --best-of N")
        return None
    return service.best_of(n, params, reward_model)


def report_candidates(best_of: dict[str, Any]) -> None:
    """Every candidate's seed and score, the kept one starred (stderr: stdout is the reply)."""
    click.echo(f"[best of {best_of['n']} by reward model {best_of['reward_model']}]", err=True)
    for i, candidate in enumerate(best_of["candidates"]):
        mark = "*" if i == best_of["chosen"] else " "
        click.echo(f" {mark} seed {candidate['seed']:<6} score {candidate['score']:+.3f}  {one_line(candidate['text'], 60)}", err=True)


def icl_request(bank: str | None, selector: str | None, k: int | None, show_examples: bool, cached: bool = False) -> IclRequest | None:
    if bank is None:
        if selector or k is not None or show_examples or cached:
            raise TunelabError("--selector, --k, --show-examples and --icl-cache need --bank BANK (the examples to choose from)")
        return None
    defaults = IclRequest(bank)
    return IclRequest(bank, selector or defaults.selector, defaults.k if k is None else k, cached)


def report_examples(icl: dict[str, object], show: bool) -> None:
    """The examples' cost and, with --show-examples, the examples themselves (stderr: stdout is the reply)."""
    examples: list[dict[str, object]] = icl["examples"]  # type: ignore[assignment]  # the provenance's icl record holds a list
    dropped = f", {icl['dropped']} dropped to fit the context" if icl["dropped"] else ""
    cached = f", {icl['cached_tokens']} from the example cache, {icl['recomputed_tokens']} recomputed" if icl.get("cached") else ""
    click.echo(
        f"[{len(examples)} example(s) from {icl['bank']} by {icl['selector']}: +{icl['example_tokens']} prompt tokens{dropped}{cached}]",
        err=True,
    )
    if show:
        for rank, example in enumerate(examples, start=1):
            click.echo(
                f"  {rank}. #{example['id']} score {example['score']:.3f}  {one_line(str(example['input']), 70)} -> "
                f"{one_line(str(example['output']), 40)}",
                err=True,
            )
