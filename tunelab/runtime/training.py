"""The training service: the one door `tunelab train`, `tunelab feedback train` and the Train screen
go through to start, continue and follow a run.

Every check of what a user asked for happens here, once: the flag combinations of the two
commands, the Train screen's form, and the settings (the argument dataclasses' `__post_init__`,
built here after the combinations are known to fit, so a refusal names the real problem). Which
trainer runs a method comes from `finetune.methods.METHODS`, never from a switch on its name.
The CLI parses flags and prints; the screen lays out the form and shows progress; neither opens a
store nor imports the trainers (the names below are what they may use).

A distillation (a teacher relabelling a bank's train inputs into a new bank) is started from the
same form and planned here too.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.finetune import feedback_runs
from tunelab.finetune.args import RENAMED, SFTArgs, field_docs
from tunelab.finetune.distributed import Planned, is_main, prepared_on_main, processes
from tunelab.finetune.feedback_runs import FeedbackPlan, FeedbackResult
from tunelab.finetune.form_args import args_from_text
from tunelab.finetune.lifecycle import Plan, TrainResult, device, resumable
from tunelab.finetune.methods import METHODS, method, names, pretrain, sft
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.finetune.progress import Listener, TrainProgress, measured_change
from tunelab.finetune.report_to import REPORT_TO
from tunelab.runtime.distill import DistillPlan, DistillSpec, plan_distillation
from tunelab.runtime.runtime import Runtime
from tunelab.stores.banks import Bank, BankStore
from tunelab.stores.runs import Run, RunStore

__all__ = [
    "FEEDBACK_METHODS",
    "KINDS",
    "NOT_FOR_GRPO",
    "RENAMED",
    "REPORT_TO",
    "FeedbackRequest",
    "Planned",
    "PreferenceArgs",
    "SFTArgs",
    "TrainProgress",
    "TrainRequest",
    "TrainingService",
    "device",
    "field_docs",
    "form_args",
    "is_main",
    "measured_change",
    "method",
    "prepared_on_main",
    "processes",
]

FEEDBACK_METHODS = names("feedback")
"""What `tunelab feedback train --method` takes."""
KINDS = {**{name: METHODS[name].label for name in ("sft", "pretrain", "grpo")}, "distill": "distil"}
"""The kinds of run the screen starts, with their labels: SFT and GRPO take a bank, continued
pre-training a corpus path; a distillation takes a bank and a teacher arm and writes a new bank."""
NOT_FOR_GRPO = ("epochs",)
"""SFTArgs fields a GRPO run has no use for: it runs a number of steps."""
RESUME_ALONE = "--resume / --restart continue a run with its own settings: give only --resume RUN or --restart RUN"

AnyPlan = Plan | FeedbackPlan
AnyResult = TrainResult | FeedbackResult
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


@dataclass(frozen=True)
class TrainRequest:
    """`tunelab train`: an SFT run on a bank, continued pre-training on a corpus, or a stopped run again."""

    name: str | None = None
    bank: str | None = None
    corpus: Path | None = None
    held_out: float = 0.1
    train_embeddings: bool = False
    on: str | None = None
    model: str | None = None
    hf_dir: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    """The SFTArgs fields given (parsed, not yet checked)."""
    resume: str | None = None
    restart: str | None = None


@dataclass(frozen=True)
class FeedbackRequest:
    """`tunelab feedback train`: a KTO / DPO / reward / GRPO / RLOO run, or a stopped one again."""

    method: str | None = None
    name: str | None = None
    on: str | None = None
    bank: str | None = None
    reward_model: str | None = None
    model: str | None = None
    hf_dir: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    """The PreferenceArgs fields given (parsed, not yet checked)."""
    resume: str | None = None
    restart: str | None = None


def form_args(kind: str, settings: Mapping[str, str]) -> SFTArgs | PreferenceArgs:
    """The settings a run of `kind` trains with, from field name -> text (blank = the default):
    a feedback method (GRPO) takes PreferenceArgs, SFT and pre-training (and the form's distil kind) take SFTArgs."""
    if kind in METHODS and METHODS[kind].family == "feedback":
        return args_from_text(PreferenceArgs, {k: v for k, v in settings.items() if k not in NOT_FOR_GRPO})
    return args_from_text(SFTArgs, settings)


class TrainingService:
    """Training for the CLI and the Train screen: built once per command or screen."""

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

    # -- what the screen lists -------------------------------------------------------------------
    def banks(self) -> list[Bank]:
        return BankStore(self.conn).list()

    def runs(self) -> RunListing:
        store = RunStore(self.conn)
        runs = store.list()
        adapters = {adapter.run_id: adapter.name for adapter in store.adapters()}
        return RunListing(runs, adapters, {run.name for run in runs if resumable(run)})

    def run(self, name: str) -> Run:
        return RunStore(self.conn).get(name)

    # -- one run, any method ---------------------------------------------------------------------
    def follow_train(self, run_id: int, resume_from: Path | None) -> Plan:
        """The plan of a recorded `tunelab train` run, as the other processes of an `accelerate launch` open it."""
        return sft.run_plan(self.settings, self.conn, run_id, resume_from)

    def follow_feedback(self, run_id: int, resume_from: Path | None) -> FeedbackPlan:
        """The plan of a recorded feedback run, as the other processes of an `accelerate launch` open it."""
        return feedback_runs.run_plan(self.settings, self.conn, run_id, resume_from)

    def train(self, plan: AnyPlan, listener: Listener | None = None, cancel: threading.Event | None = None) -> AnyResult:
        """Train a plan with its method's life cycle; a cancel leaves a checkpoint and status `cancelled`."""
        if isinstance(plan, FeedbackPlan):
            return feedback_runs.train(plan, listener, cancel)
        return sft.train(plan, listener, cancel)

    def continue_run(self, key: str, restart: bool = False) -> AnyPlan:
        """A stopped run set to continue from its last checkpoint (or from step 0 with `restart`)."""
        if method(self.run(key).method).family == "bank":
            return sft.prepare_resume(self.settings, self.conn, key, restart)
        return feedback_runs.prepare_resume(self.settings, self.conn, key, restart)

    # -- the two commands ------------------------------------------------------------------------
    def plan_train(self, request: TrainRequest) -> Plan:
        """`tunelab train`, checked and recorded. Every check of the flags is here: under
        `accelerate launch` only the main process prepares, so a refusal prints once."""
        r = request
        if r.train_embeddings:
            raise TunelabError(pretrain.EMBEDDINGS_REFUSED)
        if r.resume or r.restart:
            if r.name or r.bank or r.corpus or r.on or r.model or r.hf_dir or r.settings or (r.resume and r.restart):
                raise TunelabError(RESUME_ALONE)
            return sft.prepare_resume(self.settings, self.conn, r.resume or r.restart or "", restart=bool(r.restart))
        if r.corpus is not None:
            if not r.name or r.bank or r.on:
                raise TunelabError("give a NAME and --corpus FILE|DIR (continued pre-training takes no --bank / --on)")
            return pretrain.prepare(self.settings, self.conn, r.name, r.corpus, SFTArgs(**r.settings), r.held_out, r.model, r.hf_dir)
        if not r.name or not r.bank:
            raise TunelabError("give a NAME for the adapter and --bank BANK or --corpus FILE|DIR (or --resume RUN)")
        return sft.prepare(self.settings, self.conn, r.name, r.bank, SFTArgs(**r.settings), r.model, r.hf_dir, r.on)

    def plan_feedback(self, request: FeedbackRequest) -> FeedbackPlan:
        """`tunelab feedback train`, checked and recorded (the flag checks here, as for `plan_train`)."""
        r = request
        if r.resume or r.restart:
            given = r.method or r.bank or r.reward_model or r.on or r.name or r.model or r.hf_dir or r.settings
            if given or (r.resume and r.restart):
                raise TunelabError(RESUME_ALONE)
            return feedback_runs.prepare_resume(self.settings, self.conn, r.resume or r.restart or "", restart=bool(r.restart))
        if r.method is None:
            raise TunelabError(f"give --method {', '.join(FEEDBACK_METHODS[:-1])} or {FEEDBACK_METHODS[-1]} (or --resume RUN)")
        args = PreferenceArgs(**r.settings)
        return feedback_runs.prepare(self.settings, self.conn, r.method, args, r.name, r.on, r.model, r.hf_dir, r.bank, r.reward_model)

    # -- the screen's form -----------------------------------------------------------------------
    def start(self, kind: str, name: str, bank: str | None, corpus: str, settings: Mapping[str, str]) -> Job:
        """A new run of `kind` from the form (`settings` as `form_args` reads them); every problem
        with the form is a TunelabError here, before anything slow starts."""
        if kind not in KINDS:
            raise TunelabError(f"unknown kind of run {kind!r} (one of: {', '.join(KINDS)})")
        spec = method(kind)
        if spec.token_blocks and not corpus:
            raise TunelabError("give the corpus: a .txt/.md file or a folder of them")
        if not spec.token_blocks and bank is None:
            raise TunelabError("pick an example bank first (or import one: `tunelab bank import-demo sentiment`)")
        if not name:
            raise TunelabError("give the adapter a name")
        args = form_args(kind, settings)
        if isinstance(args, PreferenceArgs):
            return (lambda: feedback_runs.prepare(self.settings, self.conn, kind, args, name, hf_dir=self.hf_dir, bank=bank)), self.train
        if spec.token_blocks:
            path = Path(corpus).expanduser()
            return (lambda: pretrain.prepare(self.settings, self.conn, name, path, args, hf_dir=self.hf_dir)), self.train
        assert bank is not None
        return (lambda: sft.prepare(self.settings, self.conn, name, bank, args, hf_dir=self.hf_dir)), self.train

    def resume(self, run: Run) -> Job:
        """Continue `run` from its last checkpoint with the trainer of its method."""
        return (lambda: self.continue_run(run.name)), self.train

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
