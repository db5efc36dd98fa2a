"""One arm's answer to one item: its prompt (zero-shot, with selected examples, or after a
decomposition's intermediate calls), its reply on the right engine, and the scored result.

Fairness: every arm uses the same base weights, the same chat template and instruction, the same
sampler (greedy, fixed seed by default) and the same test items; arms differ only in the adapter
and in the examples put in the prompt - except `model:` arms, which run another model (a teacher)
on its own engine, loaded once per comparison.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from tunelab.config import Settings
from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.protocol import ChatEngine
from tunelab.engine.reply import Reply
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.eval.metrics import score
from tunelab.icl.prompt import PreparedPrompt, prepare_icl, task_messages
from tunelab.icl.selectors import Selector, WithoutExample
from tunelab.runtime.cached_icl import REFUSED, answer_cached
from tunelab.runtime.decompose import StepListener, Worked, decompose
from tunelab.runtime.provenance import provenance_for
from tunelab.runtime.runtime import Runtime
from tunelab.stores.comparisons import ComparisonItem, ItemResult
from tunelab.stores.provenance import Provenance

if TYPE_CHECKING:
    from tunelab.stores.banks import Bank

PROMPT_FORMAT = 1
"""Bump when the way prompts are built changes, so old results are not reused for new prompts."""


def greedy(max_tokens: int, seed: int = 0) -> SamplerParams:
    """The comparison default: deterministic, so arms differ by their setup and not by sampling luck."""
    return SamplerParams(temperature=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, max_tokens=max_tokens, seed=seed)


def default_max_tokens(labels: Sequence[str]) -> int:
    """A label needs a few tokens (the rest would be wasted CPU); free text needs room."""
    return 16 if labels else 256


PROMPTS_AHEAD = 32
"""Prompts a batched arm builds before answering them (examples chosen, tokens counted)."""


@dataclass(frozen=True)
class Query:
    """One input an arm answers; `exclude`: a train example (the query's own) never shown as an example."""

    text: str
    exclude: int | None = None


@dataclass(frozen=True)
class ArmPrompt:
    """An arm's prompt for one query, ready to send: the engine that serves the arm, the
    messages, and the provenance its reply will carry."""

    arm: Arm
    engine: ChatEngine
    prepared: PreparedPrompt
    provenance: Provenance

    @property
    def messages(self) -> list[ChatMessage]:
        return self.prepared.messages

    def reply_with(self, reply: Reply) -> ArmReply:
        return ArmReply(self.arm, reply, self.provenance)


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
        params = params.seeded()  # the seed is drawn once, so the provenance names the one used
        prompt = self.prompt(arm, Query(query, exclude), params, on_step)
        if not arm.cached:
            return prompt.reply_with(prompt.engine.chat(prompt.messages, params))
        reply, icl = answer_cached(prompt.engine, prompt.prepared, self.settings.icl_cache_recompute, params, f"arm {arm.name}")
        return ArmReply(arm, reply, replace(prompt.provenance, icl=icl))

    def prompt(self, arm: Arm, query: Query, params: SamplerParams, on_step: StepListener | None = None) -> ArmPrompt:
        """What `arm` sends for `query`: the engine, the messages and how they were made (a
        decomposition arm makes its intermediate calls here)."""
        runtime = self.runtime_for(arm)
        engine = runtime.engine_for(arm.adapter)
        worked = decompose(engine, arm.steps, self.bank.instruction, query.text, params, on_step) if arm.steps else Worked(query.text)
        if arm.selector:
            selector: Selector = self.runtime.selector(self.bank, arm.selector, seed=self.seed)
            if query.exclude is not None:
                selector = WithoutExample(selector, query.exclude, query.text, self.bank.n_train)
            prepared = prepare_icl(engine, self.bank, selector, arm.selector, arm.k, query.text, params.max_tokens, shown=worked.query)
        else:
            prepared = PreparedPrompt(task_messages(self.bank.instruction, worked.query))
        sent = [m.as_dict() for m in prepared.messages]
        provenance = provenance_for(runtime, arm.adapter, 1.0, params, prepared.icl, sent, arm=arm.name, steps=worked.steps)
        return ArmPrompt(arm, engine, prepared, provenance)

    def answer_all(
        self, arm: Arm, queries: Sequence[Query], params: SamplerParams, on_step: StepListener | None = None
    ) -> Generator[tuple[int, ArmReply], None, None]:
        """(index, finished reply) for every query, in the order they finish (close it to stop early).

        One-call arms are decoded `settings.parallel` together (llama.cpp sequences in one
        context, or concurrent requests to a server): the same replies as one at a time, in less
        wall time. Prompts are built a chunk ahead, so the first answers are stored early and an
        interrupted run loses at most the replies in flight. A decomposition arm's calls depend
        on each other, and a `~cached` arm assembles each prompt from the example cache in a
        context of its own, so they answer one query at a time."""
        params = params.seeded()
        parallel = self.settings.parallel
        if arm.steps is not None or arm.cached or parallel == 1 or len(queries) < 2:
            for index, query in enumerate(queries):
                arm_reply = self.start(arm, query.text, params, query.exclude, on_step)
                arm_reply.reply.whole_text()
                yield index, arm_reply
            return
        for at in range(0, len(queries), PROMPTS_AHEAD):
            prompts = [self.prompt(arm, query, params) for query in queries[at : at + PROMPTS_AHEAD]]
            replies = prompts[0].engine.answer_together([p.messages for p in prompts], [params] * len(prompts), parallel)
            try:
                for index, reply in replies:
                    yield at + index, prompts[index].reply_with(reply)
            finally:
                replies.close()  # a stop mid-chunk frees the engine now


def check_served(runner: ArmRunner, arms: Sequence[Arm]) -> None:
    """Refuse, before anything runs, an arm the engine can't serve: an adapter made for another
    base or missing on a remote server, a `~cached` arm on a remote server."""
    if runner.runtime.remote and (cached := next((a for a in arms if a.cached), None)):
        raise TunelabError(f"arm {cached.name}: {REFUSED} ({runner.settings.engine_url}); drop ~cached")
    for adapter in sorted({a.adapter for a in arms if a.adapter}):
        runner.runtime.engine_for(adapter)
    runner.runtime.engine_for(None)


def answers(
    runner: ArmRunner, arm: Arm, items: Sequence[ComparisonItem], params: SamplerParams, on_step: StepListener | None = None
) -> Generator[ItemResult, None, None]:
    """The arm's scored reply to each item, as each finishes (batched where the arm allows, see
    `ArmRunner.answer_all`); the token and time columns are the final call's, a decomposition's
    earlier calls are in `provenance["steps"]` (the summary adds them up)."""
    with closing(runner.answer_all(arm, [Query(item.input) for item in items], params, on_step)) as replies:
        for index, arm_reply in replies:
            yield scored(runner, items[index], arm_reply)


def scored(runner: ArmRunner, item: ComparisonItem, arm_reply: ArmReply) -> ItemResult:
    """A finished reply to `item` as a stored result: its text, scores, cost and provenance."""
    output = arm_reply.reply.whole_text()
    stats = arm_reply.reply.stats
    return ItemResult(
        arm=arm_reply.arm.name,
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
