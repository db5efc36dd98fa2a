"""Decomposition arms: intermediate calls before the answer - a plan worked step by step (`plan`),
or notes taken chunk by chunk from an input too long to read at once (`extract`).

Whether a task needs intermediate steps is a question `compare` can answer only if everything
else stays fixed: the final call here is the plain arm's prompt (system instruction, the ICL
examples, one user turn), so the answer format and the scoring do not change; only the user turn
carries the work done first. Every call goes through `engine.protocol.ChatEngine`, so a remote
server decomposes exactly as llama.cpp does, and every call is kept (`StepUse`) with its cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.context import prompt_budget
from tunelab.engine.protocol import ChatEngine
from tunelab.engine.sampling import SamplerParams
from tunelab.icl.prompt import task_messages
from tunelab.stores.provenance import StepUse

DECOMPOSE_FORMAT = 1
"""Bump when the intermediate prompts or limits change, so stored decomposed answers are not reused."""
MAX_STEPS = 4
PLAN_TOKENS = 64
STEP_TOKENS = 48
NOTE_TOKENS = 48
CHUNK_TOKENS = 512
"""`extract` reads an input longer than this in chunks of at most this many tokens (fewer where
n_ctx is smaller): a small model's attention is spent long before its context window is."""
REQUEST_CHARS = 400
"""A last paragraph up to this long is the request (the question about the document): every chunk
is read with it, and it closes the final prompt."""

PLAN_ASK = (
    "Write a short plan for the task below: a numbered list (1., 2., ...) of at most {n} steps, one line each. "
    "Write only the plan.\n\nInput:\n{query}"
)
REPAIR_ASK = "Rewrite this as a numbered list (1., 2., ...) of at most {n} steps, one line each, and nothing else:\n\n{plan}"
STEP_ASK = "{query}\n\nPlan:\n{plan}\n\n{done}Do step {i} now: {step}\nWrite only the result of this step, briefly."
EXTRACT_ASK = (
    "{request}Copy, word for word, the facts from this part of the input that are needed for the task; "
    "write NONE if there are none.\n\nPart {i} of {n}:\n{chunk}"
)
NUMBERED = re.compile(r"^\s*(\d+)[.)]\s+(\S.*)$")

StepListener = Callable[[StepUse], None]


@dataclass
class Worked:
    """The intermediate calls made for one query, and the user turn the final call carries."""

    query: str
    steps: list[StepUse] = field(default_factory=list)


def parse_plan(text: str, max_steps: int = MAX_STEPS) -> list[str] | None:
    """The steps of a well-formed plan (every non-empty line numbered 1..N in order, 1 <= N <=
    `max_steps`), or None: a malformed plan is repaired, never half-read."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    matches = [NUMBERED.match(line) for line in lines]
    if not lines or len(lines) > max_steps or any(m is None for m in matches):
        return None
    if [int(m.group(1)) for m in matches if m] != list(range(1, len(lines) + 1)):
        return None
    return [m.group(2).strip() for m in matches if m]


def numbered(steps: list[str]) -> str:
    return "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))


class Decomposer:
    """Runs one arm's intermediate calls on `engine` with the comparison's sampler (its reply
    budget replaced per call), telling `listener` after each call - where a Ctrl-C lands mid-item."""

    def __init__(self, engine: ChatEngine, instruction: str, params: SamplerParams, listener: StepListener | None = None) -> None:
        self.engine = engine
        self.instruction = instruction
        self.params = params
        self.listener = listener
        self.steps: list[StepUse] = []

    def call(self, kind: str, messages: list[ChatMessage], max_tokens: int) -> str:
        reply = self.engine.chat(messages, replace(self.params, max_tokens=max_tokens))
        text = reply.whole_text().strip()
        stats = reply.stats
        step = StepUse(
            kind,
            [m.as_dict() for m in reply.messages],
            text,
            stats.prompt_tokens,
            stats.completion_tokens,
            stats.total_ms,
            stats.finish_reason,
        )
        self.steps.append(step)
        if self.listener is not None:
            self.listener(step)
        return text

    def ask(self, kind: str, text: str, max_tokens: int) -> str:
        return self.call(kind, task_messages(self.instruction, text), max_tokens)

    def plan(self, query: str) -> Worked:
        """Plan, repair a malformed plan once (else one step: the instruction), run each step with
        the earlier results in view, and hand the numbered results to the final call."""
        steps = self.checked_plan(self.ask("plan", PLAN_ASK.format(n=MAX_STEPS, query=query), PLAN_TOKENS))
        results: list[str] = []
        for i, step in enumerate(steps, 1):
            done = f"Results so far:\n{numbered(results)}\n\n" if results else ""
            results.append(self.ask("step", STEP_ASK.format(query=query, plan=numbered(steps), done=done, i=i, step=step), STEP_TOKENS))
        work = "\n".join(f"{i}. {step} -> {result}" for i, (step, result) in enumerate(zip(steps, results), 1))
        return Worked(f"Work done step by step:\n{work}\n\n{query}", self.steps)

    def checked_plan(self, draft: str) -> list[str]:
        """The draft's steps; a malformed draft gets one rewrite call, and if that is malformed too
        the plan is the single step "do the task" (the instruction), so a run never stalls on format."""
        steps = parse_plan(draft)
        if steps is None:
            # without the task's instruction: with it, a small model answers the task instead of reformatting
            repair = task_messages("", REPAIR_ASK.format(n=MAX_STEPS, plan=draft))
            steps = parse_plan(self.call("repair", repair, PLAN_TOKENS))
        return steps or [self.instruction or "Answer the input."]

    def extract(self, query: str) -> Worked:
        """An input within `CHUNK_TOKENS` is answered as it is; a longer one is cut into chunks that
        fit (each read with the request), and the final call sees the notes instead of the input."""
        document, request = split_request(query)
        lead = f"{request}\n\n" if request else ""
        overhead = self.tokens(EXTRACT_ASK.format(request=lead, i=1, n=1, chunk=""))
        limit = min(CHUNK_TOKENS, prompt_budget(self.engine.n_ctx, NOTE_TOKENS) - overhead)
        if self.tokens(document) <= limit:
            return Worked(query)
        chunks = self.chunks(document, limit)
        notes = [
            self.ask("extract", EXTRACT_ASK.format(request=lead, i=i, n=len(chunks), chunk=chunk), NOTE_TOKENS)
            for i, chunk in enumerate(chunks, 1)
        ]
        kept = [note for note in notes if note.strip().upper().rstrip(".") != "NONE"]
        body = "\n".join(f"- {note}" for note in kept) or "- (nothing relevant found)"
        return Worked("\n\n".join(part for part in (f"Notes from the input:\n{body}", request) if part), self.steps)

    def tokens(self, text: str) -> int:
        return self.engine.count_tokens(task_messages(self.instruction, text))

    def chunks(self, document: str, limit: int) -> list[str]:
        """Word-boundary chunks of at most `limit` tokens each (with the prompt around them), sized
        from the document's own tokens per word and halved where a chunk still runs over."""
        words = document.split()
        per_chunk = max(1, int(limit * len(words) / max(1, self.tokens(document)) * 0.9))
        size = -(-len(words) // -(-len(words) // per_chunk))  # as many chunks as needed, evenly filled: no stub at the end
        pending = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
        chunks: list[str] = []
        while pending:
            chunk = pending.pop(0)
            parts = chunk.split()
            if len(parts) > 1 and self.tokens(chunk) > limit:  # the estimate ran over: halve, recheck
                half = len(parts) // 2
                pending[:0] = [" ".join(parts[:half]), " ".join(parts[half:])]
            else:
                chunks.append(chunk)
        return chunks


def split_request(query: str) -> tuple[str, str]:
    """(document, request): a short last paragraph is the request about the rest (a question
    after a document); otherwise the whole input is the document and the instruction is the request."""
    head, sep, tail = query.strip().rpartition("\n\n")
    if sep and head.strip() and len(tail) <= REQUEST_CHARS:
        return head, tail.strip()
    return query, ""


def decompose(
    engine: ChatEngine, steps: str, instruction: str, query: str, params: SamplerParams, listener: StepListener | None = None
) -> Worked:
    """Run decomposition `steps` ("plan" or "extract") for `query`; the caller makes the final call."""
    decomposer = Decomposer(engine, instruction, params, listener)
    return decomposer.plan(query) if steps == "plan" else decomposer.extract(query)
