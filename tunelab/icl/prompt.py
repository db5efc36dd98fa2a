"""The one prompt format: SFT rows, KTO/DPO rows, compare arms, ICL and chat all use `task_messages`.

The ICL-vs-fine-tune comparison is only fair while the adapter is trained on exactly the prompt
compare sends its zero-shot arm, so both are built here and nowhere else (a test checks the
token ids the trainer sees before the answer against the ones llama.cpp is sent).

Order: system prompt (the conversation's, then the bank's instruction), earlier turns of the
conversation, the examples with the most relevant one last (closest to the query), the query.
The fixed part comes first, so llama.cpp reuses its KV cache for it from one query to the next;
only the examples and the query change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.context import prompt_budget
from tunelab.icl.selectors import Selected, Selector
from tunelab.stores.banks import Bank
from tunelab.stores.provenance import ExampleUse, IclUse


class TokenCounter(Protocol):
    n_ctx: int

    def count_tokens(self, messages: list[ChatMessage]) -> int: ...


@dataclass
class IclPrompt:
    messages: list[ChatMessage]
    used: list[Selected]
    """The examples in the prompt, best first."""
    dropped: int
    """Selected examples left out because they did not fit the context window."""
    example_tokens: int
    """Prompt tokens the examples cost (the prompt with them minus the prompt without)."""


def system_prompt(base: str, instruction: str) -> str:
    return "\n\n".join(part for part in (base.strip(), instruction.strip()) if part)


def example_turns(examples: Sequence[Selected]) -> list[ChatMessage]:
    """User/assistant pairs, least relevant first (`examples` come best first)."""
    turns: list[ChatMessage] = []
    for example in reversed(examples):
        turns += [ChatMessage("user", example.input), ChatMessage("assistant", example.output)]
    return turns


def task_messages(
    instruction: str, query: str, examples: Sequence[Selected] = (), history: Sequence[ChatMessage] = ()
) -> list[ChatMessage]:
    """The messages for `query`: system (the conversation's system prompt, then the task's
    instruction), earlier turns, `examples` (given best first, shown least relevant first), the query."""
    base_system = next((m.content for m in history[:1] if m.role == "system"), "")
    system = system_prompt(base_system, instruction)
    head = [ChatMessage("system", system)] if system else []
    return head + [m for m in history if m.role != "system"] + example_turns(examples) + [ChatMessage("user", query)]


def build_icl_messages(
    engine: TokenCounter, bank: Bank, selected: Sequence[Selected], query: str, max_tokens: int, history: Sequence[ChatMessage] = ()
) -> IclPrompt:
    """The prompt for `query` with the most relevant of `selected` that fit next to the reply budget.

    Examples are fitted against the fixed part and the query only: earlier conversation turns
    are dropped by the engine's own context management (oldest first) if they don't fit.
    """
    system = [m for m in history[:1] if m.role == "system"]
    budget = prompt_budget(engine.n_ctx, max_tokens)
    zero_shot = engine.count_tokens(task_messages(bank.instruction, query, (), system))
    used: list[Selected] = []
    with_examples = zero_shot
    for example in selected:  # best first: an example that doesn't fit is skipped, smaller ones may still go in
        count = engine.count_tokens(task_messages(bank.instruction, query, [*used, example], system))
        if count <= budget:
            used, with_examples = [*used, example], count
    return IclPrompt(task_messages(bank.instruction, query, used, history), used, len(selected) - len(used), with_examples - zero_shot)


@dataclass
class PreparedPrompt:
    """What is sent to the model for one query, and (with ICL) which examples went in."""

    messages: list[ChatMessage]
    icl: IclUse | None = None


def prepare_icl(
    engine: TokenCounter,
    bank: Bank,
    selector: Selector,
    kind: str,
    k: int,
    query: str,
    max_tokens: int,
    history: Sequence[ChatMessage] = (),
    shown: str | None = None,
) -> PreparedPrompt:
    """Select `k` examples for `query` and build the prompt, recording what was chosen and its cost.
    `shown`: the user turn when it is not the query itself (a decomposition's work before the
    query); examples are still chosen for the query alone."""
    started = time.perf_counter()
    built = build_icl_messages(engine, bank, selector.select(query, k), query if shown is None else shown, max_tokens, history)
    used = tuple(ExampleUse(e.id, e.score, e.input, e.output) for e in built.used)
    return PreparedPrompt(
        built.messages, IclUse(bank.name, kind, k, used, built.dropped, built.example_tokens, (time.perf_counter() - started) * 1000)
    )
