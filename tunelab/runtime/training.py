"""What the Train screen asks of the trainers and the stores: the banks and runs it lists, one run's
loss history, and the (prepare, train) pair that starts or continues a run.

The CLI has one command per family of trainers; the screen starts every kind of run from one form
and lists every run in one table, so it asks here which module prepares and trains a run
(`sft`, `pretrain`, `feedback_runs`). A distillation (a teacher relabelling a bank's train inputs
into a new bank) is started from the same form and planned here too. The screen keeps the layout
and the events; it opens no store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.finetune import feedback_runs, pretrain, sft
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.form_args import args_from_text
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.runtime.distill import DistillPlan, DistillSpec, plan_distillation
from tunelab.runtime.runtime import Runtime
from tunelab.stores.banks import Bank, BankStore
from tunelab.stores.runs import Run, RunStore

KINDS = {"sft": "SFT", "pretrain": "pre-train", "grpo": "GRPO", "distill": "distil"}
"""The kinds of run the screen starts, with their labels: SFT and GRPO take a bank, continued
pre-training a corpus path; a distillation takes a bank and a teacher arm and writes a new bank."""
NOT_FOR_GRPO = ("epochs",)
"""SFTArgs fields a GRPO run has no use for: it runs a number of steps."""

Job = tuple[Callable[[], Any], Callable[..., Any]]
"""`prepare()` makes the plan (slow the first time: it dequantises the base) and
`train(plan, listener, cancel)` runs it; the screen calls both in a worker thread."""


@dataclass(frozen=True)
class RunListing:
    """Every run, newest last, with what the table shows beside it."""

    runs: list[Run]
    adapters: dict[int, str]
    """Run id -> the adapter it produced."""
    resumable: set[str]
    """Names of the runs that stopped early with a checkpoint their trainer can continue from."""


def resumable(run: Run) -> bool:
    return sft.resumable(run) or feedback_runs.resumable(run)


def form_args(kind: str, settings: Mapping[str, str]) -> SFTArgs | PreferenceArgs:
    """The settings a run of `kind` trains with, from field name -> text (blank = the default):
    GRPO is a feedback trainer (PreferenceArgs), SFT and pre-training take SFTArgs."""
    if kind == "grpo":
        return args_from_text(PreferenceArgs, {k: v for k, v in settings.items() if k not in NOT_FOR_GRPO})
    return args_from_text(SFTArgs, settings)


class TrainingService:
    """The Train screen's one handle on training: built once per screen, called from its handlers."""

    def __init__(self, settings: Settings, conn: sqlite3.Connection, hf_dir: Path | None = None, runtime: Runtime | None = None) -> None:
        """`hf_dir`: an HF checkpoint paired with the chat model (default: its cached dequantisation).
        `runtime`: the app's, so a distillation's teacher reuses the loaded model (default: a new one on use)."""
        self.settings = settings
        self.conn = conn
        self.hf_dir = hf_dir
        self._runtime = runtime

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.settings, self.conn)
        return self._runtime

    def banks(self) -> list[Bank]:
        return BankStore(self.conn).list()

    def runs(self) -> RunListing:
        store = RunStore(self.conn)
        runs = store.list()
        adapters = {adapter.run_id: adapter.name for adapter in store.adapters()}
        return RunListing(runs, adapters, {run.name for run in runs if resumable(run)})

    def run(self, name: str) -> Run:
        return RunStore(self.conn).get(name)

    def start(self, kind: str, name: str, bank: str | None, corpus: str, settings: Mapping[str, str]) -> Job:
        """A new run of `kind` from the form (`settings` as `form_args` reads them); every problem
        with the form is a TunelabError here, before anything slow starts."""
        if kind not in KINDS:
            raise TunelabError(f"unknown kind of run {kind!r} (one of: {', '.join(KINDS)})")
        if kind == "pretrain" and not corpus:
            raise TunelabError("give the corpus: a .txt/.md file or a folder of them")
        if kind != "pretrain" and bank is None:
            raise TunelabError("pick an example bank first (or import one: `tunelab bank import-demo sentiment`)")
        if not name:
            raise TunelabError("give the adapter a name")
        args = form_args(kind, settings)
        if isinstance(args, PreferenceArgs):
            return (
                lambda: feedback_runs.prepare(self.settings, self.conn, "grpo", args, name, hf_dir=self.hf_dir, bank=bank)
            ), feedback_runs.train
        if kind == "pretrain":
            path = Path(corpus).expanduser()
            return (lambda: pretrain.prepare(self.settings, self.conn, name, path, args, hf_dir=self.hf_dir)), sft.train
        assert bank is not None
        return (lambda: sft.prepare(self.settings, self.conn, name, bank, args, hf_dir=self.hf_dir)), sft.train

    def resume(self, run: Run) -> Job:
        """Continue `run` from its last checkpoint with the trainer of its method."""
        if run.method in sft.METHODS:
            return (lambda: sft.prepare_resume(self.settings, self.conn, run.name)), sft.train
        return (lambda: feedback_runs.prepare_resume(self.settings, self.conn, run.name)), feedback_runs.train

    def distill(self, name: str, bank: str | None, teacher: str) -> Callable[[], DistillPlan]:
        """`prepare()` for a distillation of `bank`'s train inputs by `teacher` into bank `name`;
        the same form again resumes it. Form problems are a TunelabError here."""
        if bank is None:
            raise TunelabError("pick the bank whose train inputs the teacher answers")
        if not name:
            raise TunelabError("give the new bank a name")
        if not teacher.strip():
            raise TunelabError("name the teacher arm, e.g. base+embedding@8 or model:NAME")
        spec = DistillSpec(name, Arm.parse(teacher), from_bank=bank)
        return lambda: plan_distillation(self.runtime, spec)
