"""The life cycle every training run shares, whatever its method: the files in its run dir, the
device, and the checks that stop, resume or restart it.

A run is recorded (`stores.runs`) before it trains; its rows are frozen in its run dir
(`ROWS_FILE`, and `HELD_OUT_FILE` for what it is measured on), so a resumed run trains on what it
started with; checkpoints land in the run dir, and the finished adapter is renamed into place and
registered only when completely written. The method modules (`finetune.methods`) prepare and
train; this module is what they share.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.base_weights import BaseWeights
from tunelab.finetune.methods import METHODS, Family, method
from tunelab.stores.runs import Adapter, Run, RunStore

ADAPTER_GGUF = "adapter.gguf"
META_FILE = "tunelab.json"
ROWS_FILE = "train.jsonl"
"""The exact training rows, kept in the run dir: a resumed run trains on what it started with."""
HELD_OUT_FILE = "held_out.jsonl"
"""Rows kept out of training to measure the run on (pre-training blocks, reward-model pairs)."""
STOPPED = ("cancelled", "failed", "interrupted")
"""Statuses a run can be resumed or restarted from (`interrupted`: its process was killed)."""


def resumable(run: Run) -> bool:
    """Whether a run stopped early with a checkpoint its method's trainer can continue from."""
    return run.method in METHODS and run.status in STOPPED and run.last_checkpoint is not None


def stopped_run(store: RunStore, key: str, family: Family) -> Run:
    """The run `key`, checked to be stopped (not done, not still training) and of this family of methods."""
    run = store.get(key)
    spec = method(run.method)
    if spec.family != family:
        raise TunelabError(f"run {run.name!r} is a {run.method} run: continue it with `{spec.command} --resume {run.name}`")
    if run.status == "done":
        raise TunelabError(f"run {run.name!r} is already done (delete it with `tunelab adapters delete {run.name}` to train it again)")
    store.check_stopped(run, "resume")
    return run


def resume_point(store: RunStore, run: Run, restart: bool, command: str) -> Path | None:
    """The checkpoint to continue from, or None after resetting the run to step 0 (`restart`)."""
    if restart:
        store.restart(run.id)
        return None
    checkpoint = run.last_checkpoint
    if checkpoint is None:
        raise TunelabError(
            f"run {run.name!r} stopped at step {run.step} before its first checkpoint: start it again with "
            f"`{command} --restart {run.name}` (or delete it: `tunelab adapters delete {run.name}`)"
        )
    store.set_status(run.id, "running")
    return checkpoint


@dataclass
class Plan:
    """A checked run, ready to train: rows in trl's conversational prompt/completion format."""

    settings: Settings
    conn: sqlite3.Connection
    run: Run
    base: BaseWeights
    args: SFTArgs
    rows: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    resume_from: Path | None = None
    held_out: list[list[int]] = field(default_factory=list)
    """Pre-training: token blocks the held-out perplexity is measured on, before and after."""
    start_adapter: Adapter | None = None
    """`--on`: the adapter trained further (its LoRA shape wins over lora_r / lora_alpha / targets); None = a fresh LoRA."""

    @property
    def method(self) -> str:
        return self.run.method


@dataclass
class TrainResult:
    run: Run
    adapter: Adapter | None
    """None when the run was cancelled (its checkpoint is in the run dir)."""
    cancelled: bool


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
