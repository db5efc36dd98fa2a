"""Run arms x held-out items through one llama.cpp engine and one sampler, storing each answer at once.

Fairness: every arm uses the same base weights, the same chat template and instruction, the same
sampler (greedy, fixed seed by default) and the same test items; arms differ only in the adapter
and in the examples put in the prompt. Resumability: each finished (arm, item) is written to
SQLite before the next starts, and a rerun with the same setup skips what is already there.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config import Settings
from tunelab.eval.arms import DEFAULT_K, Arm, standard_grid
from tunelab.eval.curve_summary import CurveArm, curve_summary
from tunelab.engine.llama_engine import LlamaEngine, Reply, adapter_switching_supported
from tunelab.eval.metrics import normalize, primary_metric, score
from tunelab.engine.sampling import SamplerParams
from tunelab.eval.reward_report import reward_summary
from tunelab.eval.scorer import Scorer
from tunelab.eval.statistics import WinRate
from tunelab.eval.summary import summarize
from tunelab.errors import TunelabError
from tunelab.faults import pause_point
from tunelab.stores.bank_files import read_examples
from tunelab.stores.comparisons import Comparison, ComparisonItem, ComparisonStore, ItemResult
from tunelab.stores.files import cached_sha256
from tunelab.stores.models import ModelRegistry
from tunelab.eval.report import write_report
from tunelab.stores.runs import adapter_gguf, adapter_training_ids, latest_adapter_for_bank

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
    """A reply being generated for one arm, with the examples its prompt showed."""

    arm: Arm
    reply: Reply
    examples: list[dict[str, Any]]
    selection_ms: float
    dropped_examples: int = 0


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
    return [f"{len(dupes)} of {len(items)} test items also appear in {where} ({shown}): ICL arms may copy the answer, scores are optimistic"]


def check_leakage(runner: "ArmRunner", test_set: TestSet, arms: Sequence[Arm]) -> None:
    """Refuse to score an arm on items it has seen: test ids in the ICL pool or an adapter's training data."""
    keys = {item.key for item in test_set.items}
    pool = {str(e.id) for e in bank_store(runner.conn).examples(runner.bank.name, split="train")}
    if leaked := keys & pool:
        raise TunelabError(f"{len(leaked)} test item(s) are in bank {runner.bank.name!r}'s ICL pool: the split is broken")
    for adapter in sorted({a.adapter for a in arms if a.adapter}):
        seen = {str(i) for i in adapter_training_ids(runner.conn, adapter)}
        if leaked := keys & seen:
            raise TunelabError(
                f"adapter {adapter!r} was trained on {len(leaked)} of the test items: compare it on another bank or test file"
            )


class ArmRunner:
    """Builds each arm's prompt (zero-shot or with selected examples) and starts its reply.

    Selectors are created once per kind; engines once per adapter - the base model is not
    reloaded between arms.
    """

    def __init__(self, settings: Settings, conn: sqlite3.Connection, bank: Bank, engines: Engines, seed: int = 0) -> None:
        self.settings = settings
        self.conn = conn
        self.bank = bank
        self.engines = engines
        self.seed = seed
        self._selectors: dict[str, Any] = {}

    def selector(self, kind: str) -> Any:
        if kind not in self._selectors:
            from tunelab.icl.selectors import make_selector  # chromadb + sentence-transformers: load on use

            self._selectors[kind] = make_selector(kind, self.bank, self.conn, self.settings, seed=self.seed)
        return self._selectors[kind]

    def start(self, arm: Arm, query: str, params: SamplerParams) -> ArmReply:
        engine = self.engines.get(arm.adapter)
        started = time.perf_counter()
        selected = self.selector(arm.selector).select(query, arm.k) if arm.selector else []
        from tunelab.icl.prompt import build_icl_messages

        prompt = build_icl_messages(engine, self.bank, selected, query, params.max_tokens)
        selection_ms = (time.perf_counter() - started) * 1000
        examples = [{"id": s.id, "score": s.score, "input": s.input, "output": s.output} for s in prompt.used]
        return ArmReply(arm, engine.chat(prompt.messages, params), examples, selection_ms, prompt.dropped)

    def provenance(self, arm_reply: ArmReply, params: SamplerParams) -> dict[str, Any]:
        arm = arm_reply.arm
        return {
            "arm": arm.name,
            "model_path": str(self.engines.base.model_path),
            "model_sha256": self.engines.model_sha256,
            "adapter": arm.adapter,
            "adapter_sha256": self.engines.adapter_sha256(arm.adapter),
            "selector": arm.selector,
            "k": arm.k,
            "example_ids": [e["id"] for e in arm_reply.examples],
            "example_scores": [e["score"] for e in arm_reply.examples],
            "dropped_examples": arm_reply.dropped_examples,
            "params": params.to_dict(),
            "seed": params.seed,
            "selection_ms": arm_reply.selection_ms,
        }


class Engines:
    """The base engine, loaded once, and the adapters on top of it, each loaded on first use."""

    def __init__(self, settings: Settings, conn: sqlite3.Connection, base: LlamaEngine | None = None) -> None:
        self.settings = settings
        self.conn = conn
        self._base = base
        self._adapters: dict[str, LlamaEngine] = {}

    @property
    def base(self) -> LlamaEngine:
        if self._base is None:
            self._base = LlamaEngine(
                ModelRegistry(self.conn).resolve(self.settings.model),
                n_ctx=self.settings.n_ctx,
                n_gpu_layers=self.settings.n_gpu_layers,
                n_threads=self.settings.n_threads,
            )
        return self._base

    @property
    def model_sha256(self) -> str:
        return cached_sha256(self.conn, self.base.model_path)

    def adapter_path(self, name: str) -> Path:
        return adapter_gguf(self.conn, name)

    def adapter_sha256(self, name: str | None) -> str | None:
        return cached_sha256(self.conn, self.adapter_path(name)) if name else None

    def get(self, adapter: str | None) -> LlamaEngine:
        """The engine serving `adapter` (None = the plain base). Where llama.cpp can switch LoRAs
        on a loaded model this is always the base engine; otherwise one engine per adapter."""
        base = self.base
        path = self.adapter_path(adapter).resolve() if adapter else None
        if adapter_switching_supported():
            if base.lora_path != path:
                base.set_adapter(path)
            return base
        if path is None:
            return base
        if adapter not in self._adapters:
            self._adapters[adapter] = LlamaEngine(
                base.model_path, n_ctx=base.n_ctx, n_gpu_layers=base.n_gpu_layers,
                n_threads=self.settings.n_threads, lora_path=path,
            )
        return self._adapters[adapter]


def run_comparison(
    runner: ArmRunner,
    test_set: TestSet,
    arms: Sequence[Arm],
    params: SamplerParams,
    progress: ProgressCallback | None = None,
) -> Comparison:
    """Answer every item with every arm, skipping (arm, item) pairs already stored for this setup.

    An exception from `progress` (Ctrl-C, a cancelled worker) stops the run after the current
    item was stored; calling again with the same arguments resumes.
    """
    if not arms:
        raise TunelabError("no arms to compare")
    if not test_set.items:
        raise TunelabError(f"no test items for bank {test_set.bank!r}")
    check_leakage(runner, test_set, arms)
    store = ComparisonStore(runner.conn)
    config = comparison_config(runner, test_set, params)
    comparison = store.open(test_set.bank, fingerprint(config), config, test_set.items, [a.name for a in arms])
    total, done = len(arms) * len(test_set.items), 0
    for arm in arms:
        arm_key = fingerprint({"arm": arm.name, "adapter_sha256": runner.engines.adapter_sha256(arm.adapter)})
        finished = store.finished(comparison.id, arm.name, arm_key)
        for item in test_set.items:
            reused = item.position in finished
            if not reused:
                store.add_result(comparison.id, arm_key, answer(runner, arm, item, params))
                pause_point("compare.result_stored")
            done += 1
            if progress is not None:
                progress(Progress(arm.name, item.position, done, total, reused))
    return comparison


def answer(runner: ArmRunner, arm: Arm, item: ComparisonItem, params: SamplerParams) -> ItemResult:
    arm_reply = runner.start(arm, item.input, params)
    output = arm_reply.reply.text()
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
        provenance=runner.provenance(arm_reply, params),
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
        "model": runner.engines.base.model_name,
        "model_sha256": runner.engines.model_sha256,
        "n_ctx": runner.engines.base.n_ctx,
        "embedding_model": runner.settings.embedding_model,
        "sampler": params.to_dict(),
        "selector_seed": runner.seed,
        "prompt_format": PROMPT_FORMAT,
    }


def finish(
    settings: Settings, conn: sqlite3.Connection, comparison_id: int, labels: Sequence[str], warnings: Sequence[str] = (),
    reward_model: tuple[str, Scorer] | None = None, votes: Sequence[WinRate] = (), curve: Sequence[CurveArm] = (),
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
        comparison, items, store.results(comparison_id, comparison.arms),
        primary_metric(labels, [i.reference for i in items]), warnings, labels=labels,
    )
    if reward_model is not None:
        name, scorer = reward_model
        summary.reward = reward_summary(summary.items, comparison.arms, comparison.config["instruction"], scorer, name, votes)
    if curve:
        summary.curve = curve_summary(summary, curve)
    path = write_report(settings, summary)
    return store.finish(comparison_id, str(path)), path
