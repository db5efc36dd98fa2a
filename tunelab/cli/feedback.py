"""`tunelab rate` and `tunelab feedback`: rate replies, see and export the feedback, train on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.cli.output import echo_json, json_option, limit_option, limited
from tunelab.cli.training import dataclass_options, given_values, run_options, train_until_done, where
from tunelab.runtime.feedback import FORMATS, FeedbackService
from tunelab.runtime.training import FEEDBACK_METHODS, FeedbackRequest, PreferenceArgs, TrainingService, measured_change
from tunelab.runtime.training import method as method_of

if TYPE_CHECKING:
    from tunelab.finetune.feedback_runs import FeedbackPlan, FeedbackResult


@click.command("rate")
@click.argument("message_id", type=int)
@click.argument("rating", type=click.Choice(["up", "down", "none"]))
@click.option("--reason", default="", help="Short reason (e.g. wrong, rude, verbose).")
@click.option("--comment", default="", help="Free-text comment kept with the rating.")
@pass_app
def rate(app: AppContext, message_id: int, rating: str, reason: str, comment: str) -> None:
    """Rate reply MESSAGE_ID up or down (none removes the rating)."""
    stored = FeedbackService(app.settings, app.conn).rate(message_id, None if rating == "none" else rating, reason, comment)
    click.echo(f"message {message_id}: {stored.rating if stored else 'rating removed'}")


@click.group("feedback", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Ratings and A/B votes: list, export, train on them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_feedback)


@command.command("list")
@click.option("--rating", type=click.Choice(["up", "down"]), default=None, help="Only this rating.")
@click.option("--adapter", default=None, help="Only replies of this adapter ('' = the base model).")
@click.option("--counts", is_flag=True, help="Counts per model and adapter instead of the ratings.")
@limit_option
@json_option
@pass_app
def list_feedback(app: AppContext, rating: str | None, adapter: str | None, counts: bool, limit: int | None, as_json: bool) -> None:
    """One line per rating, newest first (and a count of A/B votes)."""
    feedback = FeedbackService(app.settings, app.conn)
    if counts:
        rows = limited(feedback.counts(), limit)
        if as_json:
            echo_json(rows)
            return
        for c in rows:
            click.echo(f"{(c.model_sha256 or '-')[:12]:<12}  {c.adapter or '(base)':<24}  👍 {c.up:>4}  👎 {c.down:>4}  pairs {c.pairs:>4}")
        return
    ratings = limited(feedback.ratings(rating=rating, adapter=adapter)[::-1], limit)
    if as_json:
        echo_json(
            [
                {
                    "id": r.id,
                    "subject": r.subject,
                    "rating": r.rating,
                    "reason": r.reason,
                    "comment": r.comment,
                    "message_id": r.message_id,
                    "conversation_id": r.conversation_id,
                    "created_at": r.created_at,
                    "prompt": r.snapshot.prompt,
                    "reply": r.snapshot.reply,
                    "adapter": r.snapshot.adapter,
                    "arm": r.snapshot.arm,
                    "model_sha256": r.snapshot.model_sha256,
                }
                for r in ratings
            ]
        )
        return
    for r in ratings:
        prompt = r.snapshot.prompt[-1]["content"].replace("\n", " ")[:40]
        reply = r.snapshot.reply.replace("\n", " ")[:40]
        mark = "👍" if r.rating == "up" else "👎"
        click.echo(f"{r.id:>5}  {mark}  {r.subject:<14}  {prompt:<40}  → {reply}")
    tally = feedback.vote_tally()
    if tally.votes:
        click.echo(f"{tally.votes} A/B vote(s), {tally.decisive} with a winner")


@command.command("export")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="trl KTO/DPO/reward rows or LLaMA-Factory sharegpt.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None, help="JSONL file (default stdout).")
@pass_app
def export(app: AppContext, fmt: str, output: Path | None) -> None:
    """Export the feedback as training data (JSONL)."""
    feedback = FeedbackService(app.settings, app.conn)
    if output is None:
        for row in feedback.rows(fmt):
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    n, _ = feedback.export(fmt, output)
    extra = f" and {output.parent / 'dataset_info.json'}" if fmt == "llamafactory" else ""
    click.echo(f"wrote {n} row(s) to {output}{extra}", err=True)


@command.command("delete")
@click.argument("rating_id", type=int, required=False)
@click.option("--vote", "vote_id", type=int, default=None, help="Delete this A/B vote instead.")
@pass_app
def delete(app: AppContext, rating_id: int | None, vote_id: int | None) -> None:
    """Delete rating RATING_ID (or an A/B vote with --vote)."""
    if (rating_id is None) == (vote_id is None):
        raise click.UsageError("give a RATING_ID or --vote VOTE_ID")
    feedback = FeedbackService(app.settings, app.conn)
    if vote_id is not None:
        feedback.delete_vote(vote_id)
        click.echo(f"deleted vote {vote_id}")
    else:
        assert rating_id is not None
        feedback.delete(rating_id)
        click.echo(f"deleted rating {rating_id}")


@command.command("train")
@click.option(
    "--method",
    type=click.Choice(FEEDBACK_METHODS),
    default=None,
    help="kto: 👍/👎 ratings; dpo: preference pairs; reward: a reward model; grpo / rloo: RL against the reward model.",
)
@click.option("--bank", "-b", default=None, help="grpo / rloo: prompts from this bank's train split (default: the rated prompts).")
@click.option("--reward-model", default=None, metavar="NAME", help="grpo / rloo: the reward model (default: the newest for this model).")
@click.option(
    "--on", "on", default=None, metavar="ADAPTER", help="Train this adapter further (kto/dpo; default: a fresh LoRA on the base)."
)
@click.option("--name", default=None, help="Name of the new adapter / reward model (default: <on or feedback>-<method>).")
@run_options
@dataclass_options(PreferenceArgs)
@pass_app
def train(
    app: AppContext,
    method: str | None,
    bank: str | None,
    reward_model: str | None,
    on: str | None,
    name: str | None,
    resume: str | None,
    restart: str | None,
    model: str | None,
    hf_dir: Path | None,
    **kwargs: Any,
) -> None:
    """Train on the feedback: a KTO, DPO, GRPO or RLOO adapter (chat/compare with --adapter NAME) or a reward model."""
    service = TrainingService(app.settings, app.conn)
    settings = given_values(PreferenceArgs, kwargs)
    request = FeedbackRequest(method, name, on, bank, reward_model, model, hf_dir, settings, resume, restart)

    done = train_until_done(
        lambda: service.plan_feedback(request), service.follow_feedback, announce, service.train, "tunelab feedback train", resume, restart
    )
    if done is not None:  # None: another process of an `accelerate launch`, the main one reports
        report(*done)


def announce(plan: FeedbackPlan) -> None:
    """The run's first line on stderr: the method, what it trains on (and what was left out), where."""
    spec = method_of(plan.method)
    what = f"{len(plan.rows)} {spec.rows}"
    if spec.against_reward_model:
        what += f" against reward model {plan.run.args['reward_model']!r}"
    held = f" ({len(plan.held_out)} held out)" if plan.held_out else ""
    left_out = "".join(f", {n} {why} left out" for why, n in plan.skipped.items())
    start = f" on adapter {plan.start_adapter.name!r}" if plan.start_adapter else ""
    click.echo(f"training {plan.method} {plan.run.name!r}{start} on {what}{held}{left_out} ({where(plan.run.device)})", err=True)


def report(plan: FeedbackPlan, result: FeedbackResult) -> None:
    """The finished run: its loss, what it measured, and how to use what it made."""
    run = result.run
    m = result.metrics
    click.echo(
        f"{run.method} {run.name!r}: loss {m['first_loss']:.3f} -> {m['final_loss']:.3f} in {m['steps']} steps, {run.train_seconds:.0f}s"
    )
    if result.reward_dir is not None:
        click.echo(f"held-out pair accuracy {m['held_out_accuracy']:.2f} on {len(plan.held_out)} pairs; model in {result.reward_dir}")
        click.echo(f"use it: tunelab chat --best-of 4 --reward-model {run.name} 'your prompt'")
        return
    click.echo(measured_change(m))
    click.echo(f"chat with it: tunelab chat --adapter {run.name} 'your prompt'")
    rival = f" --adapter {m['on']}" if m["on"] else ""  # the predecessor; the base arm is always in
    click.echo(f"compare: tunelab compare --bank {run.bank or 'BANK'} --adapter {run.name}{rival}")
