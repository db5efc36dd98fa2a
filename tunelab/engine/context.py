"""Keep a conversation inside the context window by dropping its oldest turns."""

from __future__ import annotations

from collections.abc import Callable

from tunelab.engine.chat_template import ChatMessage
from tunelab.errors import TunelabError


def prompt_budget(n_ctx: int, max_tokens: int) -> int:
    """Prompt tokens that fit with the reply's budget reserved (at most half the window, so a
    large --max-tokens never leaves no room for the prompt)."""
    return n_ctx - min(max_tokens, n_ctx // 2)


def fit_history(messages: list[ChatMessage], budget: int, count: Callable[[list[ChatMessage]], int]) -> tuple[list[ChatMessage], int]:
    """Drop the oldest messages after the system prompt until the prompt fits `budget` tokens.

    The system prompt and the newest message are never dropped; an assistant reply goes with
    the user turn before it, so the history keeps alternating. Returns (messages, dropped).
    """
    head = [m for m in messages[:1] if m.role == "system"]
    body = messages[len(head) :]
    dropped = 0
    while True:
        candidate = head + body
        used = count(candidate)
        if used <= budget:
            return candidate, dropped
        if len(body) <= 1:
            raise TunelabError(
                f"prompt too long: {used} tokens, but only {budget} fit in the context window "
                "after reserving the reply budget (shorten it, lower --max-tokens or raise n_ctx)"
            )
        cut = 1
        while cut < len(body) - 1 and body[cut].role == "assistant":
            cut += 1
        body = body[cut:]
        dropped += cut
