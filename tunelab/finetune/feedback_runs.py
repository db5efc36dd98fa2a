"""`tunelab feedback train` as a recorded run, with the life cycle of an SFT run (see sft.py).

A run is `prepare`d (too-little-data checks first, before any model is loaded; then the base
weights and the run row), then `train`ed: progress and the loss history go to the run row,
checkpoints to the run dir (every `save_steps` and on cancel), so a cancelled or killed run
continues with `prepare_resume`. The rows are frozen in the run dir when it starts: ratings
added meanwhile don't change what a resumed run learns from.

What a finished run leaves:
- KTO / DPO: a policy adapter under `adapters/NAME` (PEFT + GGUF), registered like an SFT
  adapter, so `chat --adapter NAME` and `compare --adapter NAME` serve it. With `--on` it
  inherits the starting adapter's bank and training ids (it contains that adapter), so the
  compare leakage guard still knows what it has seen.
- GRPO / RLOO (`rl.py`): a policy adapter like KTO / DPO, trained against a finished reward
  model (its name is kept in the run's args) on prompts from the feedback or a bank (`--bank`).
- reward: a sequence-classification LoRA under `reward_models/NAME`; the done run is its
  registration (`stores.runs.reward_models`), and `reward.load_reward_model` is how best-of-n and compare find it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.finetune import distributed, feedback_train
from tunelab.finetune.base_weights import BaseWeights, prepare_base
from tunelab.finetune.export_gguf import fit_targets
from tunelab.finetune.lifecycle import ADAPTER_GGUF, HELD_OUT_FILE, META_FILE, ROWS_FILE, device, resume_point, stopped_run
from tunelab.finetune.methods import method as method_of
from tunelab.finetune.methods.reward import NOT_ON, RewardModel, load_reward_model
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.finetune.progress import Listener
from tunelab.finetune.run_record import Recorder, oom_message, status_on_error
from tunelab.stores.files import atomic_dir, atomic_write_text, read_jsonl, write_jsonl
from tunelab.stores.models import ModelRegistry
from tunelab.stores.runs import Adapter, Run, RunStore

Rows = list[dict[str, Any]]


@dataclass
class FeedbackPlan:
    """A checked feedback run, ready to train on the rows frozen at its start."""

    settings: Settings
    conn: sqlite3.Connection
    run: Run
    base: BaseWeights
    args: PreferenceArgs
    rows: Rows
    held_out: Rows = field(default_factory=list)
    start_adapter: Adapter | None = None
    """The adapter trained further (`--on`); None = a fresh LoRA on the base."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Feedback left out of the rows and why (ties, identical pair texts)."""
    resume_from: Path | None = None
    scorer: RewardModel | None = None
    """GRPO / RLOO: the reward model the policy is trained against."""

    @property
    def method(self) -> str:
        return self.run.method


@dataclass
class FeedbackResult:
    run: Run
    cancelled: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    adapter: Adapter | None = None
    """The registered policy adapter (KTO / DPO runs that finished)."""
    reward_dir: Path | None = None
    """The reward model's folder (reward runs that finished)."""


def default_name(conn: sqlite3.Connection, method: str, on: str | None) -> str:
    """`<on>-<method>` or `feedback-<method>`, numbered when taken: one command, no naming chore."""
    stem = f"{on or 'feedback'}-{method}"
    taken = {run.name for run in RunStore(conn).list()}
    if stem not in taken:
        return stem
    return next(f"{stem}-{i}" for i in range(2, len(taken) + 3) if f"{stem}-{i}" not in taken)


def prepare(
    settings: Settings,
    conn: sqlite3.Connection,
    method: str,
    args: PreferenceArgs,
    name: str | None = None,
    on: str | None = None,
    model: str | None = None,
    hf_dir: Path | None = None,
    bank: str | None = None,
    reward_model: str | None = None,
) -> FeedbackPlan:
    """Check the feedback (or prompts), resolve the base (the `--on` adapter's own base), record the run.

    GRPO / RLOO also load the reward model here (`reward_model`, default the newest for the base),
    so a missing one is refused before the run is recorded."""
    spec = method_of(method)
    if spec.reward_model and on:
        raise TunelabError(NOT_ON)
    if not spec.against_reward_model and (bank or reward_model):
        raise TunelabError("--bank and --reward-model apply to --method grpo / rloo")
    data = feedback_train.steps(method).training_rows(conn, args, bank)
    runs = RunStore(conn)
    name = name or default_name(conn, method, on)
    if any(run.name == name for run in runs.list()):
        raise TunelabError(
            f"a run named {name!r} exists: pick another --name, continue it with `tunelab feedback train --resume {name}`, "
            f"start it over with `--restart {name}`, or delete it (`tunelab adapters delete {name}`)"
        )
    start = runs.adapter(on) if on else None
    if start is not None:
        if model or hf_dir:
            raise TunelabError(f"--on {on} trains on that adapter's own base: drop --model / --hf-dir")
        parent = runs.get(str(start.run_id))
        base = prepare_base(conn, settings.dirs.models, Path(parent.base_gguf), Path(parent.hf_dir))
        run_bank, example_ids = parent.bank, parent.example_ids
    else:
        gguf = ModelRegistry(conn).resolve(model or settings.model)
        base = prepare_base(conn, settings.dirs.models, gguf, hf_dir)
        args = fit_targets(args, base.gguf_path, base.hf_dir, exported=not spec.reward_model)
        run_bank, example_ids = bank or "", data.example_ids
    scorer = None
    extras: dict[str, Any] = {"on": on}
    if spec.against_reward_model:
        extras["reward_model"], scorer = load_reward_model(settings, conn, reward_model, base.gguf_path)
    run_dir = settings.dirs.runs / name
    run = runs.create(
        name,
        base.gguf_path,
        base.gguf_sha256,
        base.hf_dir,
        run_bank,
        example_ids,
        {**args.to_dict(), **extras},
        run_dir,
        device(),
        method=method,
        command=spec.command,
    )
    write_jsonl(run_dir / ROWS_FILE, data.rows)
    write_jsonl(run_dir / HELD_OUT_FILE, data.held_out)
    return FeedbackPlan(settings, conn, run, base, args, data.rows, data.held_out, start, data.skipped, scorer=scorer)


def prepare_resume(settings: Settings, conn: sqlite3.Connection, key: str, restart: bool = False) -> FeedbackPlan:
    """A cancelled, failed or interrupted feedback run, set to continue from its last checkpoint
    (or from step 0 with `restart`) on its own rows."""
    store = RunStore(conn)
    run = stopped_run(store, key, "feedback")
    plan = run_plan(settings, conn, run.id, None)
    checkpoint = resume_point(store, run, restart, "tunelab feedback train")
    return replace(plan, run=store.get(str(run.id)), resume_from=checkpoint)


def run_plan(settings: Settings, conn: sqlite3.Connection, run_id: int, resume_from: Path | None) -> FeedbackPlan:
    """The plan of a recorded feedback run, from its row and the rows frozen in its run dir: what a
    resumed run continues with, and what the other processes of an `accelerate launch` train."""
    store = RunStore(conn)
    run = store.get(str(run_id))
    rows = read_jsonl(Path(run.run_dir) / ROWS_FILE)
    if not rows:
        raise TunelabError(
            f"run {run.name!r} lost its training data ({Path(run.run_dir) / ROWS_FILE}): delete it "
            f"(`tunelab adapters delete {run.name}`) and train again"
        )
    values = dict(run.args)
    on = values.pop("on", None)
    reward_model = values.pop("reward_model", None)
    start = store.adapter(on) if on else None
    base = prepare_base(conn, settings.dirs.models, Path(run.base_gguf), Path(run.hf_dir))
    scorer = load_reward_model(settings, conn, reward_model, base.gguf_path)[1] if method_of(run.method).against_reward_model else None
    return FeedbackPlan(
        settings,
        conn,
        run,
        base,
        PreferenceArgs.from_dict(values),
        rows,
        read_jsonl(Path(run.run_dir) / HELD_OUT_FILE),
        start,
        resume_from=resume_from,
        scorer=scorer,
    )


def train(plan: FeedbackPlan, listener: Listener | None = None, cancel: threading.Event | None = None) -> FeedbackResult:
    """Train and write the result; a cancel leaves a checkpoint and status `cancelled`.

    Under `accelerate launch` every process trains; only the main one records progress and status
    and writes the result (the others return after training, with no adapter)."""
    store = RunStore(plan.conn)
    run = plan.run
    main = distributed.is_main()
    recorder = Recorder(store, run, plan.resume_from is not None, listener) if main else None
    from tunelab.finetune.progress_callback import ProgressCallback  # transformers: only when training

    progress = ProgressCallback(recorder, cancel)
    start_dir = Path(plan.start_adapter.peft_dir) if plan.start_adapter else None
    with status_on_error(store, run.id, oom_message(plan.args)) if main else nullcontext():
        fitted = feedback_train.fit(
            plan.method,
            plan.rows,
            plan.base.hf_dir,
            plan.args,
            run.checkpoints_dir,
            start_dir,
            [progress],
            plan.resume_from,
            plan.scorer,
            plan.base.chat_template,
        )
    if recorder is None:
        return FeedbackResult(run, progress.cancelled)
    seconds = run.train_seconds + fitted.seconds
    if progress.cancelled:
        store.set_status(run.id, "cancelled", "cancelled by the user", train_seconds=seconds)
        return FeedbackResult(store.get(str(run.id)), True)
    store.set_status(run.id, "running", train_seconds=seconds)
    losses = [h["loss"] for h in recorder.history]
    metrics: dict[str, Any] = {
        "method": plan.method,
        "on": plan.start_adapter.name if plan.start_adapter else None,
        "steps": fitted.trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_examples": len(plan.rows),
    }
    if method_of(plan.method).reward_model:
        final = plan.settings.dirs.reward_models / run.name
        with atomic_dir(final) as tmp:
            metrics.update(feedback_train.write_output(fitted, tmp, plan.base.hf_dir, plan.base.gguf_sha256, plan.held_out))
        store.set_status(run.id, "done")
        shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
        return FeedbackResult(store.get(str(run.id)), False, metrics, reward_dir=final)
    final = plan.settings.dirs.adapters / run.name
    with atomic_dir(final) as tmp:
        metrics.update(feedback_train.write_output(fitted, tmp, plan.base.hf_dir, plan.base.gguf_sha256, [], plan.base.gguf_path))
        meta = {
            "run": run.name,
            "method": plan.method,
            "on": metrics["on"],
            "bank": run.bank,
            "base_gguf": str(plan.base.gguf_path),
            "base_sha256": plan.base.gguf_sha256,
            "args": plan.args.to_dict(),
            "metrics": metrics,
        }
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2))
    adapter = store.add_adapter(Adapter(run.name, run.id, run.bank, plan.base.gguf_sha256, str(final), str(final / ADAPTER_GGUF), metrics))
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
    return FeedbackResult(store.get(str(run.id)), False, metrics, adapter=adapter)
