"""`tunelab curve`: ICL and LoRA over the number of examples, on the same test items, in one comparison.

The grid: ICL arms at each k per selector (k = 0 is the zero-shot base, shared by every
selector), and LoRA arms trained on nested subsets of the train split (the first n of one
seeded shuffle, so the n = 64 subset contains the n = 16 one) at the same epochs budget, each
size with several training seeds. Everything is resumable through what already exists: answers
are a comparison's (arm, item) results (`run_comparison` skips the finished ones), and adapters
have names derived from their setup (bank, base model, settings, subset ids, seed), so a rerun
finds each finished adapter, resumes a cancelled run from its checkpoint, and trains only what
is missing. The report is the comparison's report with a learning-curve section and plot.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.eval.curve_summary import LORA, ZERO_SHOT, CurveArm
from tunelab.finetune.args import RENAMED, SFTArgs
from tunelab.runtime.arm_runner import ArmRunner
from tunelab.runtime.compare import Progress, fingerprint, finish, run_comparison
from tunelab.runtime.test_sets import TestSet
from tunelab.stores.comparisons import Comparison
from tunelab.stores.runs import RunStore

if TYPE_CHECKING:  # transformers loads with it: only once something is trained
    from tunelab.finetune.progress import TrainProgress

DEFAULT_KS = (0, 1, 2, 4, 8)
DEFAULT_SELECTORS = ("jaccard", "random")
DEFAULT_SIZES: tuple[int | None, ...] = (16, 64, 256, None)
"""None = the whole train split."""
DEFAULT_SEEDS = 3
TRAIN_FIELDS = ("epochs", "learning_rate", "lora_r", "batch_size", "max_length")
"""The SFTArgs a curve exposes; every LoRA point shares them (the seed is the curve's own)."""


class CurveStopped(TunelabError):
    """Stopped on request (Ctrl-C, Escape): every finished answer and adapter is kept."""

    exit_code = 130


@dataclass(frozen=True)
class CurveSpec:
    args: SFTArgs
    """Training settings of every LoRA point (the same epochs budget for every n); the seed varies."""
    ks: tuple[int, ...] = DEFAULT_KS
    selectors: tuple[str, ...] = DEFAULT_SELECTORS
    sizes: tuple[int | None, ...] = DEFAULT_SIZES
    seeds: int = DEFAULT_SEEDS
    subset_seed: int = 0
    """Seed of the one shuffle of the train split whose prefixes are the nested subsets."""

    def __post_init__(self) -> None:
        problems = []
        if any(k < 0 for k in self.ks):
            problems.append("k values must be >= 0")
        if any(k > 0 for k in self.ks) and not self.selectors:
            problems.append("k > 0 needs at least one selector")
        if any(n is not None and n < 2 for n in self.sizes):
            problems.append("a LoRA needs at least 2 train examples (n >= 2)")
        if self.sizes and self.seeds < 1:
            problems.append(f"seeds must be >= 1 (got {self.seeds})")
        if self.args.max_steps is not None:
            problems.append("every LoRA point trains for the same epochs budget: give --epochs, not --max-steps")
        if not self.ks and not self.sizes:
            problems.append("nothing to run: give k values or LoRA sizes")
        if problems:
            raise TunelabError("bad curve settings: " + "; ".join(problems))


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """ "0,1,2,4" -> (0, 1, 2, 4), de-duplicated and sorted; '' -> ()."""
    try:
        values = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise TunelabError(f"{what} must be comma-separated whole numbers (got {text!r})") from None
    return tuple(sorted(values))


def parse_sizes(text: str) -> tuple[int | None, ...]:
    """ "16,64,all" -> (16, 64, None)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    sized = parse_ints(",".join(p for p in parts if p.lower() != "all"), "--sizes (or 'all')")
    return sized + ((None,) if any(p.lower() == "all" for p in parts) else ())


def spec_from_text(text: str) -> tuple[CurveSpec, int | None]:
    """A curve spec (and a test-item limit) from "ks=0,1,4 sizes=16,all seeds=2 epochs=1 limit=20":
    the TUI's one-line form. Keys left out keep the defaults; unknown keys are an error."""
    from tunelab.eval.arms import parse_selectors
    from tunelab.finetune.form_args import args_from_text

    values: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep:
            raise TunelabError(f"curve settings are key=value pairs (got {token!r})")
        key = key.strip().replace("-", "_")
        values[RENAMED.get(key, key)] = value
    known = {"ks", "selectors", "sizes", "seeds", "subset_seed", "limit", *TRAIN_FIELDS}
    if unknown := sorted(set(values) - known):
        raise TunelabError(f"unknown curve setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        seeds, subset_seed = int(values.get("seeds", DEFAULT_SEEDS)), int(values.get("subset_seed", 0))
        limit = int(values["limit"]) if "limit" in values else None
    except ValueError:
        raise TunelabError("seeds, subset_seed and limit must be whole numbers") from None
    if limit is not None and limit < 1:
        raise TunelabError(f"limit must be >= 1 (got {limit})")
    args = args_from_text(SFTArgs, {k: v for k, v in values.items() if k in TRAIN_FIELDS})
    spec = CurveSpec(
        args,
        parse_ints(values["ks"], "ks") if "ks" in values else DEFAULT_KS,
        tuple(parse_selectors(values["selectors"])) if "selectors" in values else DEFAULT_SELECTORS,
        parse_sizes(values["sizes"]) if "sizes" in values else DEFAULT_SIZES,
        seeds,
        subset_seed,
    )
    return spec, limit


def icl_arms(spec: CurveSpec) -> list[Arm]:
    return ([Arm()] if 0 in spec.ks else []) + [Arm(None, kind, k) for kind in spec.selectors for k in spec.ks if k > 0]


@dataclass(frozen=True)
class LoraJob:
    """One LoRA point's training: its adapter name says exactly what it was trained on."""

    name: str
    n: int
    seed: int
    ids: list[Any] = field(repr=False)
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def arm(self) -> Arm:
        return Arm(self.name)


def lora_jobs(conn: Any, bank: str, spec: CurveSpec, model_sha256: str) -> list[LoraJob]:
    """The LoRA points: nested subsets (prefixes of one seeded shuffle) x training seeds."""
    if not spec.sizes:
        return []
    from tunelab.finetune.methods.sft import training_rows  # transformers: only for a curve with LoRA points

    ids, rows = training_rows(conn, bank)
    if len(ids) < 2:
        raise TunelabError(f"bank {bank!r} has {len(ids)} train example(s): LoRA points need at least 2")
    order = list(range(len(ids)))
    random.Random(spec.subset_seed).shuffle(order)
    sizes = sorted({len(ids) if n is None else min(n, len(ids)) for n in spec.sizes})
    # hashed in the spelling the names were first made with, so a rerun still finds those adapters
    before = {new: old for old, new in RENAMED.items()}
    settings = {before.get(k, k): v for k, v in spec.args.to_dict().items() if k not in ("seed", "save_steps")}
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", bank)
    jobs = []
    for n in sizes:
        chosen = order[:n]
        subset = [ids[i] for i in chosen]
        key = fingerprint({"bank": bank, "model": model_sha256, "args": settings, "ids": subset})[:8]
        for seed in range(spec.seeds):
            jobs.append(LoraJob(f"curve-{stem}-n{n}-s{seed}-{key}", n, seed, subset, [rows[i] for i in chosen]))
    return jobs


@dataclass(frozen=True)
class CurveProgress:
    """One event of the whole grid: answers and adapters done, and an ETA for everything left."""

    phase: str
    """"answering" or "training"."""
    label: str
    """The arm answering, or the adapter training."""
    answers_done: int
    answers_total: int
    adapters_done: int
    adapters_total: int
    eta: GridEta | None
    step: TrainProgress | None = None

    def describe(self) -> str:
        step = f" step {self.step.step}/{self.step.total}" if self.step is not None else ""
        loss = f" loss {self.step.loss:.3f}" if self.step is not None and self.step.loss is not None else ""
        eta = self.eta.describe() if self.eta is not None else "ETA -"
        return (
            f"{self.phase} {self.label}{step}{loss} · answers {self.answers_done}/{self.answers_total} · "
            f"adapters {self.adapters_done}/{self.adapters_total} · grid {eta}"
        )


@dataclass(frozen=True)
class GridEta:
    """Seconds left for the whole grid, and whether every part of what is left has a measured rate."""

    seconds: float
    complete: bool
    """False while the training (or the answering) left has no rate measured yet: `seconds` then
    counts only the parts that have one - a lower bound, shown as such rather than hidden."""

    def describe(self) -> str:
        return f"ETA {self.seconds:.0f}s" if self.complete else f"ETA >= {self.seconds:.0f}s (training not timed yet)"


class GridClock:
    """ETA for the whole grid from the rates measured so far: seconds per new answer, and seconds per
    trained example-epoch (the training cost scales with n x epochs, not with steps under packing)."""

    def __init__(self, answers_total: int, train_units: float) -> None:
        self.answers_total = answers_total
        self.train_units = train_units
        self.seen: set[tuple[str, int]] = set()
        self.answer_seconds = 0.0
        self.answers_new = 0
        self.units_done = 0.0
        self.unit_seconds = 0.0
        self._last = time.perf_counter()

    def answered(self, event: Progress) -> None:
        now = time.perf_counter()
        self.seen.add((event.arm, event.position))
        if not event.reused:
            self.answers_new += 1
            self.answer_seconds += now - self._last
        self._last = now

    def trained(self, units: float, seconds: float) -> None:
        """A finished training job (or a finished share of one: `units` so far)."""
        self.units_done += units
        self.unit_seconds += seconds
        self._last = time.perf_counter()

    def eta(self, current_units: float = 0.0, current_seconds: float = 0.0) -> GridEta | None:
        """None until a new answer is timed; a lower bound (answers only) until training is timed too."""
        answers_left = self.answers_total - len(self.seen)
        units_left = self.train_units - self.units_done - current_units
        units, seconds = self.units_done + current_units, self.unit_seconds + current_seconds
        if answers_left and not self.answers_new:
            return None
        answer_rate = self.answer_seconds / self.answers_new if self.answers_new else 0.0
        untimed = units_left > 1e-9 and units <= 0
        unit_rate = seconds / units if units > 0 else 0.0
        return GridEta(answers_left * answer_rate + max(0.0, units_left) * unit_rate, complete=not untimed)


@dataclass
class CurveResult:
    comparison: Comparison
    report_dir: Path
    trained: list[str]
    """Adapters trained (or resumed) by this call."""
    reused_adapters: list[str]
    generated: int
    """Answers generated by this call (the rest were reused)."""
    reused_answers: int


CurveListener = Callable[[CurveProgress], None]


def train_job(
    runner: ArmRunner, job: LoraJob, args: SFTArgs, hf_dir: Path | None, listener: Callable[[TrainProgress], None], cancel: threading.Event
) -> None:
    """Train (or resume) one LoRA point; a cancel keeps its checkpoint for the rerun."""
    from tunelab.finetune.lifecycle import resumable
    from tunelab.finetune.methods import sft

    store = RunStore(runner.conn)
    existing = next((r for r in store.list() if r.name == job.name), None)
    if existing is not None and resumable(existing):
        plan = sft.prepare_resume(runner.settings, runner.conn, job.name)
    elif existing is not None:
        raise TunelabError(
            f"curve run {job.name!r} is {existing.status} without a checkpoint to resume "
            f"({existing.error or 'no error recorded'}); see `tunelab adapters runs`"
        )
    else:
        plan = sft.plan_for(
            runner.settings, runner.conn, job.name, runner.bank.name, job.ids, job.rows, replace(args, seed=job.seed), hf_dir=hf_dir
        )
    if sft.train(plan, listener, cancel).cancelled:
        raise CurveStopped(f"stopped while training {job.name!r} (checkpoint kept): run the same command again to resume")


def run_curve(
    runner: ArmRunner,
    test_set: TestSet,
    spec: CurveSpec,
    params: SamplerParams,
    hf_dir: Path | None = None,
    listener: CurveListener | None = None,
    cancel: threading.Event | None = None,
) -> CurveResult:
    """Answer with every ICL arm, train every missing LoRA point, answer with those, write the report."""
    cancel = cancel or threading.Event()
    store = RunStore(runner.conn)
    icl = icl_arms(spec)
    jobs = lora_jobs(runner.conn, runner.bank.name, spec, runner.runtime.model_sha256)
    finished = {a.name for a in store.adapters()}
    to_train = [job for job in jobs if job.name not in finished]
    arms = icl + [job.arm for job in jobs]
    clock = GridClock(len(arms) * len(test_set.items), sum(job.n * spec.args.epochs for job in to_train))
    adapters_done = len(jobs) - len(to_train)
    counts = {"generated": 0, "reused": 0}

    def emit(phase: str, label: str, step: TrainProgress | None = None, eta: GridEta | None = None) -> None:
        if listener is not None:
            listener(CurveProgress(phase, label, len(clock.seen), clock.answers_total, adapters_done, len(jobs), eta, step))

    def answered(event: Progress) -> None:
        if (event.arm, event.position) not in clock.seen:
            counts["reused" if event.reused else "generated"] += 1
        clock.answered(event)
        emit("answering", event.arm, eta=clock.eta())
        if cancel.is_set():
            raise CurveStopped("stopped: finished answers and adapters are stored; run the same command again to resume")

    if icl:
        run_comparison(runner, test_set, icl, params, answered)
    for job in to_train:
        started = time.perf_counter()
        units = job.n * spec.args.epochs

        def trained_step(event: TrainProgress, job: LoraJob = job, started: float = started, units: float = units) -> None:
            share = units * event.step / max(1, event.total)
            emit("training", job.name, event, clock.eta(share, time.perf_counter() - started))

        emit("training", job.name, eta=clock.eta())
        train_job(runner, job, spec.args, hf_dir, trained_step, cancel)
        clock.trained(units, time.perf_counter() - started)
        adapters_done += 1
    comparison = run_comparison(runner, test_set, arms, params, answered)
    comparison, path = finish(
        runner.settings, runner.conn, comparison.id, runner.bank.labels, test_set.warnings, curve=curve_arms(runner, icl, jobs)
    )
    reused = [job.name for job in jobs if job.name in finished]
    return CurveResult(comparison, path, [job.name for job in to_train], reused, counts["generated"], counts["reused"])


def curve_arms(runner: ArmRunner, icl: Sequence[Arm], jobs: Sequence[LoraJob]) -> list[CurveArm]:
    """Each arm's place on the curve, with the training cost of the LoRA ones from their run rows."""
    store = RunStore(runner.conn)
    placed = [CurveArm(arm.name, arm.selector or ZERO_SHOT, arm.k) for arm in icl]
    for job in jobs:
        run = store.get(job.name)
        tokens = run.tokens_per_s * run.train_seconds if run.tokens_per_s else None
        placed.append(CurveArm(job.arm.name, LORA, job.n, job.seed, run.train_seconds, tokens))
    return placed
