"""Where each ICL example's tokens lie in a prompt: the token view the example cache works on.

A prompt is rendered whole by the chat template, then tokenized; the example cache needs the
same tokens cut at message boundaries (the system turn, the turns before the examples, each
example's user/assistant pair, the query turn with the reply header). The pieces come from
rendering growing message lists without the reply header. A template is code from whoever
made the GGUF, so the cut is trusted only when each rendering is a prefix of the next and the
pieces' tokens, joined, are the whole prompt's tokens; otherwise there is no segmentation and
the caller answers the exact way.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from tunelab.engine.chat_template import ChatMessage, ChatTemplate


@dataclass(frozen=True)
class PromptSegments:
    """One prompt's tokens cut at message boundaries; joined, they are the prompt."""

    prefix: tuple[int, ...]
    """The system turn: computed once, every example's KV is computed after it."""
    head: tuple[int, ...]
    """Turns between the system turn and the first example (earlier conversation), computed each time."""
    examples: tuple[tuple[int, ...], ...]
    """Each example's user/assistant pair, in prompt order (least relevant first)."""
    tail: tuple[int, ...]
    """The query turn and the reply header."""

    @property
    def tokens(self) -> list[int]:
        return [*self.prefix, *self.head, *(t for example in self.examples for t in example), *self.tail]


def segment(template: ChatTemplate, messages: list[ChatMessage], n_examples: int) -> PromptSegments | None:
    """`messages` (ending with `n_examples` example pairs, then the query) cut into segments, or None
    when the template's text or tokens do not split at the message boundaries."""
    first = len(messages) - 1 - 2 * n_examples
    if n_examples < 1 or first < 0:
        return None
    pairs = messages[first:-1]
    if any(m.role != role for m, role in zip(pairs, ["user", "assistant"] * n_examples)) or messages[-1].role != "user":
        return None
    system = 1 if messages[0].role == "system" and first >= 1 else 0
    cuts = [system, first, *(first + 2 * (i + 1) for i in range(n_examples))]
    texts = ["" if cut == 0 else template.render(messages[:cut], add_generation_prompt=False) for cut in cuts]
    texts.append(template.render(messages))
    if any(not later.startswith(earlier) for earlier, later in pairwise(texts)):
        return None
    pieces = [texts[0], *(later[len(earlier) :] for earlier, later in pairwise(texts))]
    tokens = [tuple(template.tokenize(piece)) for piece in pieces]
    segments = PromptSegments(tokens[0], tokens[1], tuple(tokens[2:-1]), tokens[-1])
    if any(not example for example in segments.examples) or not segments.tail:
        return None
    return segments if segments.tokens == template.tokens(messages) else None
