"""Run a comparison - every arm over every held-out item - and finish it into a report.

Resumability: each finished (arm, item) is written to SQLite before the next starts, and a rerun
with the same setup (the same fingerprint of everything that decides the answers) skips what is
already there. The test sets and the leakage check are in `runtime.test_sets`, the prompt and
reply of one arm for one item in `runtime.arm_runner`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.eval.curve_summary import CurveArm, curve_summary
from tunelab.eval.distill_summary import distill_summary
from tunelab.eval.metrics import primary_metric
from tunelab.eval.report import write_report
from tunelab.eval.reward_report import reward_summary
from tunelab.eval.scorer import Scorer
from tunelab.eval.statistics import WinRate
from tunelab.eval.summary import summarize
from tunelab.faults import pause_point
from tunelab.runtime.arm_runner import PROMPT_FORMAT, ArmRunner, answers, check_served
from tunelab.runtime.decompose import DECOMPOSE_FORMAT, StepListener
from tunelab.runtime.test_sets import TestSet, bank_store, check_leakage
from tunelab.stores.comparisons import Comparison, ComparisonStore
from tunelab.stores.distillations import DistillationStore
from tunelab.stores.runs import RunStore


@dataclass(frozen=True)
class Progress:
    arm: str
    position: int
    done: int
    total: int
    reused: bool


ProgressCallback = Callable[[Progress], None]


def fingerprint(data: Any) -> str:
    """A stable key for a setup: the same data (key order aside) gives the same hash."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def run_comparison(
    runner: ArmRunner,
    test_set: TestSet,
    arms: Sequence[Arm],
    params: SamplerParams,
    progress: ProgressCallback | None = None,
    on_step: StepListener | None = None,
) -> Comparison:
    """Answer every item with every arm, skipping (arm, item) pairs already stored for this setup.

    An exception from `progress` (Ctrl-C, a cancelled worker) stops the run after the current
    item was stored; calling again with the same arguments resumes. An exception from `on_step`
    (after a decomposition arm's intermediate call) stops it mid-item: nothing of that item is
    stored, and the rerun works it through again from its first step (greedy: the same steps).
    """
    if not arms:
        raise TunelabError("no arms to compare")
    if not test_set.items:
        raise TunelabError(f"no test items for bank {test_set.bank!r}")
    check_leakage(runner, test_set, arms)
    check_served(runner, arms)
    store = ComparisonStore(runner.conn)
    config = comparison_config(runner, test_set, params)
    comparison = store.open(test_set.bank, fingerprint(config), config, test_set.items, [a.name for a in arms])
    total, done = len(arms) * len(test_set.items), 0
    for arm in arms:
        identity: dict[str, Any] = {"arm": arm.name, "adapter_sha256": runner.runtime.adapter_sha256(arm.adapter)}
        if arm.model is not None:  # another model: its file, not its name, decides the answers
            identity["model_sha256"] = runner.model_sha256(arm)
        if arm.steps is not None:  # only then, so the fingerprints of one-call arms stay what they were
            identity["decompose_format"] = DECOMPOSE_FORMAT
        if arm.cached:  # only then, as above: how many tokens per example are recomputed decides the answers
            identity["icl_cache_recompute"] = runner.settings.icl_cache_recompute
        arm_key = fingerprint(identity)
        finished = store.finished(comparison.id, arm.name, arm_key)
        for item in test_set.items:
            if item.position in finished:
                done += 1
                if progress is not None:
                    progress(Progress(arm.name, item.position, done, total, reused=True))
        pending = [item for item in test_set.items if item.position not in finished]
        with closing(answers(runner, arm, pending, params, on_step)) as results:
            for result in results:
                store.add_result(comparison.id, arm_key, result)
                pause_point("compare.result_stored")
                done += 1
                if progress is not None:
                    progress(Progress(arm.name, result.position, done, total, reused=False))
    return comparison


def comparison_config(runner: ArmRunner, test_set: TestSet, params: SamplerParams) -> dict[str, Any]:
    """Everything besides the arms that decides the outputs: same config -> results are reusable."""
    bank = runner.bank
    train = bank_store(runner.conn).examples(bank.name, split="train")
    return {
        "bank": bank.name,
        "instruction": bank.instruction,
        "labels": list(bank.labels),
        "train_pool": fingerprint([(e.id, e.input, e.output) for e in train]),
        "test_source": test_set.source,
        "items": fingerprint([(i.key, i.input, i.reference) for i in test_set.items]),
        "model": runner.runtime.engine.model_name,
        "model_sha256": runner.runtime.model_sha256,
        "n_ctx": runner.runtime.engine.n_ctx,
        "embedding_model": runner.settings.embedding_model,
        "sampler": params.to_dict(),
        "selector_seed": runner.seed,
        "prompt_format": PROMPT_FORMAT,
        # only when set, so the fingerprints of comparisons run in-process stay what they were
        **({"engine_url": runner.settings.engine_url} if runner.runtime.remote else {}),
    }


def finish(
    settings: Settings,
    conn: sqlite3.Connection,
    comparison_id: int,
    labels: Sequence[str],
    warnings: Sequence[str] = (),
    reward_model: tuple[str, Scorer] | None = None,
    votes: Sequence[WinRate] = (),
    curve: Sequence[CurveArm] = (),
) -> tuple[Comparison, Path]:
    """Summarise a fully answered comparison, write its report folder, and mark it done.

    With `reward_model` (name, scorer) the report adds its scores per arm and the blind `votes`
    between the compared arms: the feedback loop's view next to the reference metrics. With
    `curve` (where each arm sits on a learning curve) it adds the curve, its plot and costs.
    """
    store = ComparisonStore(conn)
    comparison = store.get(comparison_id)
    items = store.items(comparison_id)
    summary = summarize(
        comparison,
        items,
        store.results(comparison_id, comparison.arms),
        primary_metric(labels, [i.reference for i in items]),
        warnings,
        labels=labels,
    )
    if reward_model is not None:
        name, scorer = reward_model
        summary.reward = reward_summary(summary.items, comparison.arms, comparison.config["instruction"], scorer, name, votes)
    if curve:
        summary.curve = curve_summary(summary, curve)
    if students := distilled_students(conn, comparison.bank, comparison.arms):
        summary.distillation = distill_summary(summary, students, labels)
    path = write_report(settings, summary)
    return store.finish(comparison_id, str(path)), path


def distilled_students(conn: sqlite3.Connection, bank: str, arms: Sequence[str]) -> list[tuple[str, str]]:
    """(student arm, teacher arm) for every adapter arm trained on a distilled bank whose teacher is
    also an arm here. An ICL teacher counts only where it drew its examples from this same bank:
    elsewhere the arm of the same name shows other examples and is not the teacher."""
    pairs = []
    runs, jobs = RunStore(conn), DistillationStore(conn)
    for name in arms:
        arm = Arm.parse(name)
        if arm.adapter is None:
            continue
        trained_on = runs.get(str(runs.adapter(arm.adapter).run_id)).bank
        for job in jobs.list(trained_on):
            teacher = Arm.parse(job.teacher)
            if job.teacher in arms and (not teacher.is_icl or job.context_bank == bank) and (name, job.teacher) not in pairs:
                pairs.append((name, job.teacher))
    return pairs
