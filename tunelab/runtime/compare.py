"""Run arms x held-out items through one llama.cpp engine and one sampler, storing each answer at once.

Fairness: every arm uses the same base weights, the same chat template and instruction, the same
sampler (greedy, fixed seed by default) and the same test items; arms differ only in the adapter
and in the examples put in the prompt - except `model:` arms, which run another model (a teacher)
on its own engine, loaded once per comparison. Resumability: each finished (arm, item) is written to
SQLite before the next starts, and a rerun with the same setup skips what is already there.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config import Settings
from tunelab.engine.reply import Reply
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.arms import DEFAULT_K, Arm, standard_grid
from tunelab.eval.curve_summary import CurveArm, curve_summary
from tunelab.eval.distill_summary import distill_summary
from tunelab.eval.metrics import normalize, primary_metric, score
from tunelab.eval.report import write_report
from tunelab.eval.reward_report import reward_summary
from tunelab.eval.scorer import Scorer
from tunelab.eval.statistics import WinRate
from tunelab.eval.summary import summarize
from tunelab.faults import pause_point
from tunelab.icl.prompt import PreparedPrompt, prepare_icl, task_messages
from tunelab.icl.selectors import Selector, WithoutExample
from tunelab.runtime.decompose import DECOMPOSE_FORMAT, StepListener, Worked, decompose
from tunelab.runtime.provenance import provenance_for
from tunelab.runtime.runtime import Runtime
from tunelab.stores.bank_files import read_examples
from tunelab.stores.comparisons import Comparison, ComparisonItem, ComparisonStore, ItemResult
from tunelab.stores.distillations import DistillationStore
from tunelab.stores.provenance import Provenance
from tunelab.stores.runs import RunStore, adapter_training_ids, latest_adapter_for_bank

if TYPE_CHECKING:
    from tunelab.stores.banks import Bank, BankStore

PROMPT_FORMAT = 1
"""Bump when the way prompts are built changes, so old results are not reused for new prompts."""


def greedy(max_tokens: int, seed: int = 0) -> SamplerParams:
    """The comparison default: deterministic, so arms differ by their setup and not by sampling luck."""
    return SamplerParams(temperature=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, max_tokens=max_tokens, seed=seed)


def default_max_tokens(labels: Sequence[str]) -> int:
    """A label needs a few tokens (the rest would be wasted CPU); free text needs room."""
    return 16 if labels else 256


@dataclass
class TestSet:
    """Held-out items for one bank, with where they came from and what looked suspicious."""

    bank: str
    items: list[ComparisonItem]
    source: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class ArmReply:
    """A reply being generated for one arm, and how it was made."""

    arm: Arm
    reply: Reply
    provenance: Provenance

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The examples its prompt showed, best first (stored with each compare result)."""
        return [asdict(e) for e in self.provenance.icl.examples] if self.provenance.icl else []

    @property
    def dropped_examples(self) -> int:
        return self.provenance.icl.dropped if self.provenance.icl else 0

    @property
    def selection_ms(self) -> float:
        return self.provenance.icl.selection_ms if self.provenance.icl else 0.0


@dataclass(frozen=True)
class Progress:
    arm: str
    position: int
    done: int
    total: int
    reused: bool


ProgressCallback = Callable[[Progress], None]


def duplicates(items: Sequence[ComparisonItem], train_inputs: Sequence[str]) -> list[ComparisonItem]:
    """Test items whose input also appears (after normalisation) in the training data."""
    seen = {normalize(text) for text in train_inputs}
    return [item for item in items if normalize(item.input) in seen]


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def bank_store(conn: sqlite3.Connection) -> BankStore:
    """The example banks, imported on use so the report viewer and `--help` don't load the ICL stack."""
    from tunelab.stores.banks import BankStore

    return BankStore(conn)


def list_banks(conn: sqlite3.Connection) -> list[str]:
    return [bank.name for bank in bank_store(conn).list()]


def open_bank(conn: sqlite3.Connection, name: str) -> Bank:
    """The bank, or a one-line error naming the ones that exist."""
    return bank_store(conn).get(name)


def default_adapters(conn: sqlite3.Connection, bank: str) -> list[str]:
    """The newest finished adapter trained on this bank, if any: the fine-tune half of the grid."""
    newest = latest_adapter_for_bank(conn, bank)
    return [newest] if newest else []


def latest_report_dir(conn: sqlite3.Connection) -> str | None:
    """The report folder of the newest finished comparison, if any."""
    comparison = ComparisonStore(conn).latest_done()
    return comparison.report_dir if comparison is not None and comparison.report_dir else None


def arm_choices(conn: sqlite3.Connection, bank: str) -> list[Arm]:
    """A starting set for the side-by-side screen: base, base+embedding, and the bank's adapter."""
    return standard_grid(["embedding"], DEFAULT_K, default_adapters(conn, bank))[:4]


def bank_test_set(conn: sqlite3.Connection, bank: Bank, limit: int | None = None) -> TestSet:
    """The bank's held-out split (first `limit` items in the bank's stored order)."""
    store = bank_store(conn)
    test = store.examples(bank.name, split="test")[: limit if limit is not None else None]
    items = [ComparisonItem(i, str(e.id), e.input, e.output) for i, e in enumerate(test)]
    train = [e.input for e in store.examples(bank.name, split="train")]
    return TestSet(bank.name, items, f"bank {bank.name!r} test split", duplicate_warnings(items, train, "the bank's train split"))


def file_test_set(conn: sqlite3.Connection, bank: Bank, path: Path, limit: int | None = None) -> TestSet:
    """Items from a JSONL/CSV file with the same fields as a bank, checked against the bank's train data."""
    parsed = read_examples(path)
    rows = parsed.rows[: limit if limit is not None else None]
    items = [ComparisonItem(i, f"file:{r.line}", r.input, r.output) for i, r in enumerate(rows)]
    train = [e.input for e in bank_store(conn).examples(bank.name, split="train")]
    skipped = [f"{len(parsed.skipped)} line(s) of {path} skipped: {parsed.skipped_summary()}"] if parsed.skipped else []
    return TestSet(bank.name, items, f"file {path}", skipped + duplicate_warnings(items, train, f"bank {bank.name!r}'s train split"))


def duplicate_warnings(items: Sequence[ComparisonItem], train_inputs: Sequence[str], where: str) -> list[str]:
    dupes = duplicates(items, train_inputs)
    if not dupes:
        return []
    shown = ", ".join(d.key for d in dupes[:5]) + (" ..." if len(dupes) > 5 else "")
    return [
        f"{len(dupes)} of {len(items)} test items also appear in {where} ({shown}): ICL arms may copy the answer, scores are optimistic"
    ]


def check_leakage(runner: ArmRunner, test_set: TestSet, arms: Sequence[Arm]) -> None:
    """Refuse to score an arm on items it has seen: test ids in the ICL pool or an adapter's training data.

    An adapter trained on a distilled bank saw its source examples' inputs: those ids count as
    seen too, and (for inputs read from a file) so does any test item with the same input."""
    keys = {item.key for item in test_set.items}
    pool = {str(e.id) for e in bank_store(runner.conn).examples(runner.bank.name, split="train")}
    if leaked := keys & pool:
        raise TunelabError(f"{len(leaked)} test item(s) are in bank {runner.bank.name!r}'s ICL pool: the split is broken")
    for adapter in sorted({a.adapter for a in arms if a.adapter}):
        trained = adapter_training_ids(runner.conn, adapter)
        origins = DistillationStore(runner.conn).origins({i for i in trained if isinstance(i, int)})
        seen = {str(i) for i in trained} | {str(o.source_example_id) for o in origins if o.source_example_id is not None}
        inputs = {normalize(o.input) for o in origins if o.source_example_id is None}
        if leaked := (keys & seen) | {item.key for item in test_set.items if normalize(item.input) in inputs}:
            through = " (as the inputs of the distilled bank it was trained on)" if origins else ""
            raise TunelabError(
                f"adapter {adapter!r} was trained on {len(leaked)} of the test items{through}: compare it on another bank or test file"
            )


def check_served(runner: ArmRunner, arms: Sequence[Arm]) -> None:
    """Refuse, before anything runs, an arm whose adapter the engine can't serve: made for another
    base, or missing on a remote server."""
    for adapter in sorted({a.adapter for a in arms if a.adapter}):
        runner.runtime.engine_for(adapter)
    runner.runtime.engine_for(None)


class ArmRunner:
    """Builds each arm's prompt (zero-shot or with selected examples) and starts its reply, on the
    process's runtime: the base model is loaded once, selectors are built once per kind. A
    `model:` arm runs on a runtime of its own per model, loaded once and closed by `close`."""

    def __init__(self, runtime: Runtime, bank: Bank, seed: int = 0) -> None:
        self.runtime = runtime
        self.bank = bank
        self.seed = seed
        self._models: dict[str, Runtime] = {}

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def conn(self) -> sqlite3.Connection:
        return self.runtime.conn

    def runtime_for(self, arm: Arm) -> Runtime:
        """The runtime serving `arm`: the process's, or (another model) one per model - a model
        file here, or the server's model id when the engine is remote."""
        if arm.model is None:
            return self.runtime
        if self.runtime.remote:
            key, settings = arm.model, replace(self.settings, engine_model=arm.model, model="")
        else:
            path = self.runtime.models.resolve(arm.model).resolve()
            if path == self.runtime.model_path.resolve():
                return self.runtime
            key, settings = str(path), replace(self.settings, model=str(path))
        if key not in self._models:
            self._models[key] = Runtime(settings, self.conn)
        return self._models[key]

    def model_sha256(self, arm: Arm) -> str | None:
        """The file hash of a `model:` arm's model (None for arms on the base)."""
        return self.runtime_for(arm).model_sha256 if arm.model is not None else None

    def close(self) -> None:
        """Close the other models' engines (the process's runtime stays open for its owner)."""
        for runtime in self._models.values():
            runtime.close()
        self._models = {}

    def start(
        self, arm: Arm, query: str, params: SamplerParams, exclude: int | None = None, on_step: StepListener | None = None
    ) -> ArmReply:
        """Start `arm`'s reply to `query`; `exclude`: a train example (the query's own) never shown as an example.

        A decomposition arm first makes its intermediate calls (blocking; `on_step` hears each),
        then starts the final reply: examples are chosen for the query, the user turn carries the work."""
        runtime = self.runtime_for(arm)
        engine = runtime.engine_for(arm.adapter)
        worked = decompose(engine, arm.steps, self.bank.instruction, query, params, on_step) if arm.steps else Worked(query)
        if arm.selector:
            selector: Selector = self.runtime.selector(self.bank, arm.selector, seed=self.seed)
            if exclude is not None:
                selector = WithoutExample(selector, exclude, query, self.bank.n_train)
            prepared = prepare_icl(engine, self.bank, selector, arm.selector, arm.k, query, params.max_tokens, shown=worked.query)
        else:
            prepared = PreparedPrompt(task_messages(self.bank.instruction, worked.query))
        reply = engine.chat(prepared.messages, params)
        sent = [m.as_dict() for m in prepared.messages]
        provenance = provenance_for(runtime, arm.adapter, 1.0, params, prepared.icl, sent, arm=arm.name, steps=worked.steps)
        return ArmReply(arm, reply, provenance)


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
        arm_key = fingerprint(identity)
        finished = store.finished(comparison.id, arm.name, arm_key)
        for item in test_set.items:
            reused = item.position in finished
            if not reused:
                store.add_result(comparison.id, arm_key, answer(runner, arm, item, params, on_step))
                pause_point("compare.result_stored")
            done += 1
            if progress is not None:
                progress(Progress(arm.name, item.position, done, total, reused))
    return comparison


def answer(runner: ArmRunner, arm: Arm, item: ComparisonItem, params: SamplerParams, on_step: StepListener | None = None) -> ItemResult:
    """The arm's scored reply to the item; the token and time columns are the final call's, a
    decomposition's earlier calls are in `provenance["steps"]` (the summary adds them up)."""
    arm_reply = runner.start(arm, item.input, params, on_step=on_step)
    output = arm_reply.reply.whole_text()
    stats = arm_reply.reply.stats
    return ItemResult(
        arm=arm.name,
        position=item.position,
        output=output,
        scores=score(output, item.reference, runner.bank.labels),
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        ttft_ms=stats.ttft_ms,
        total_ms=stats.total_ms,
        decode_tps=stats.decode_tps,
        finish_reason=stats.finish_reason,
        examples=arm_reply.examples,
        provenance=arm_reply.provenance.to_dict(),
    )


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
