"""Best-of-n: sample N replies with different seeds and keep the one the reward model likes most.

The cheapest way to use a reward model at inference time: no new policy, just N times the
decoding. `ChatService` stores the chosen reply like any other, with every candidate's score and
seed in its provenance so the user can see how much the pick mattered (and rate it, closing the
loop). With ICL every candidate sees the same chosen examples, and the reward model scores the
replies against that prompt - the one the user's ratings were snapshotted with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.protocol import ChatEngine
from tunelab.engine.reply import Reply
from tunelab.engine.sampling import SEED_RANGE, SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.scorer import Scorer

MAX_N = 16


@dataclass
class Candidate:
    seed: int
    text: str
    score: float
    reply: Reply


@dataclass
class BestOfN:
    candidates: list[Candidate]
    """In sampling order; `best` indexes into it."""
    best: int

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.best]

    def provenance(self, reward_model: str) -> dict[str, Any]:
        return {
            "reward_model": reward_model,
            "n": len(self.candidates),
            "chosen": self.best,
            "candidates": [{"seed": c.seed, "score": c.score, "text": c.text} for c in self.candidates],
        }


def check(n: int, params: SamplerParams) -> None:
    """Refuse a best-of that cannot help, before a reward model is loaded for it."""
    if not 2 <= n <= MAX_N:
        raise TunelabError(f"best-of n must be between 2 and {MAX_N} (got {n})")
    if params.temperature == 0:
        raise TunelabError("best-of needs sampling: with temperature 0 all candidates are the same reply")


@dataclass(frozen=True)
class BestOfRequest:
    """Sample `n` replies and keep the one reward model `reward_model` (loaded as `scorer`) scores highest."""

    n: int
    scorer: Scorer
    reward_model: str


def sample_best(
    engine: ChatEngine, messages: list[ChatMessage], params: SamplerParams, n: int, scorer: Scorer, parallel: int = 0
) -> BestOfN:
    """Generate `n` replies to `messages` (seeds seed, seed+1, ...), `parallel` decoded together
    (0: as many as memory allows), and score them all at once."""
    check(n, params)
    first = params.seeded().seed
    assert first is not None
    seeds = [(first + i) % SEED_RANGE for i in range(n)]
    finished = dict(engine.answer_together([messages] * n, [replace(params, seed=seed) for seed in seeds], parallel))
    replies = [(seed, finished[i]) for i, seed in enumerate(seeds)]
    for _, reply in replies:
        reply.whole_text()  # a candidate cut off mid-reply is never scored or picked
    prompt = [m.as_dict() for m in replies[0][1].messages]
    scores = scorer.score(prompt, [r.so_far for _, r in replies])
    candidates = [Candidate(seed, r.so_far, s, r) for (seed, r), s in zip(replies, scores)]
    best = max(range(n), key=lambda i: candidates[i].score)
    return BestOfN(candidates, best)
