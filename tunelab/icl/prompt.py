"""Few-shot prompts: selected examples as user/assistant turns in the model's chat template.

Order: system prompt (the conversation's, then the bank's instruction), earlier turns of the
conversation, the examples with the most relevant one last (closest to the query), the query.
The fixed part comes first, so llama.cpp reuses its KV cache for it from one query to the next;
only the examples and the query change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tunelab.engine.chat_template import ChatMessage
from tunelab.icl.selectors import Selected
from tunelab.stores.banks import Bank


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


def build_icl_messages(engine: TokenCounter, bank: Bank, selected: Sequence[Selected], query: str, max_tokens: int,
                       history: Sequence[ChatMessage] = ()) -> IclPrompt:
    """The prompt for `query` with the most relevant of `selected` that fit next to the reply budget.

    Examples are fitted against the fixed part and the query only: earlier conversation turns
    are dropped by the engine's own context management (oldest first) if they don't fit.
    """
    base_system = next((m.content for m in history[:1] if m.role == "system"), "")
    system = system_prompt(base_system, bank.instruction)
    head = [ChatMessage("system", system)] if system else []
    body = [m for m in history if m.role != "system"]
    question = [ChatMessage("user", query)]
    budget = engine.n_ctx - min(max_tokens, engine.n_ctx // 2)
    zero_shot = engine.count_tokens(head + question)
    used: list[Selected] = []
    with_examples = zero_shot
    for example in selected:  # best first: an example that doesn't fit is skipped, smaller ones may still go in
        count = engine.count_tokens(head + example_turns([*used, example]) + question)
        if count <= budget:
            used, with_examples = [*used, example], count
    return IclPrompt(head + body + example_turns(used) + question, used, len(selected) - len(used), with_examples - zero_shot)
