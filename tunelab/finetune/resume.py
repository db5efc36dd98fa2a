"""Which trainer continues a stopped run, by the run's method: SFT and continued pre-training
go through `sft`, the feedback methods (KTO, DPO, reward, GRPO, RLOO) through `feedback_runs`.

The CLI has one command per family; the Train screen lists every run in one table, so it asks
here instead of choosing a module itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from tunelab.config import Settings
from tunelab.finetune import feedback_runs, sft
from tunelab.stores.runs import Run


def resumable(run: Run) -> bool:
    """Whether the run stopped early with a checkpoint that its trainer can continue from."""
    return sft.resumable(run) or feedback_runs.resumable(run)


def resume(settings: Settings, conn: sqlite3.Connection, run: Run) -> tuple[Callable[[], Any], Callable[..., Any]]:
    """(prepare, train) for continuing `run`: `prepare()` makes the plan (slow: it loads the base),
    `train(plan, listener, cancel)` runs it."""
    if run.method in sft.METHODS:
        return (lambda: sft.prepare_resume(settings, conn, run.name)), sft.train
    return (lambda: feedback_runs.prepare_resume(settings, conn, run.name)), feedback_runs.train
