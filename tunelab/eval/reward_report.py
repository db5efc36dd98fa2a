"""The feedback loop's verdict on a comparison: what the user's reward model, and their blind votes,
say about each arm - did the new adapter learn what they rated up?

Every arm's reply to an item is scored against the same zero-shot prompt (the bank's instruction
and the item's input), not the prompt the arm saw: ICL arms saw extra examples, and the question
is which reply answers the user better, not which prompt was longer. Win-rates are per item
against the first arm (`tunelab compare` puts the base model first, so `--adapter NEW
--adapter OLD` shows both adapters against the same yardstick), ties count half, with Wilson
intervals like the side-by-side votes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from tunelab.eval.scorer import Scorer
from tunelab.eval.statistics import WinRate, wilson_interval


@dataclass
class ArmReward:
    arm: str
    mean: float
    """Mean reward of the arm's replies."""
    versus_first: WinRate | None
    """How often the reward model preferred this arm's reply to the first arm's (None for the first arm)."""


@dataclass
class RewardSummary:
    reward_model: str
    first_arm: str
    arms: list[ArmReward]
    votes: list[WinRate] = field(default_factory=list)
    """Blind side-by-side votes between arms of this comparison (any prompt)."""


def item_prompt(instruction: str, text: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": instruction}] if instruction.strip() else []) + [{"role": "user", "content": text}]


def reward_summary(
    items: Sequence[dict[str, Any]], arms: Sequence[str], instruction: str, scorer: Scorer, name: str, votes: Sequence[WinRate] = ()
) -> RewardSummary:
    """Score every arm's output per item (one batch per item) and compare each arm with `arms[0]`.

    `items` are a summary's item rows (`input`, `outputs[arm]["output"]`).
    """
    scores: dict[str, list[float]] = {arm: [] for arm in arms}
    for item in items:
        replies = [item["outputs"][arm]["output"] for arm in arms]
        for arm, value in zip(arms, scorer.score(item_prompt(instruction, item["input"]), replies)):
            scores[arm].append(value)
    first = arms[0]
    result = []
    for arm in arms:
        versus = None
        if arm != first:
            pairs = list(zip(scores[arm], scores[first]))
            wins = sum(a > b for a, b in pairs)
            losses = sum(a < b for a, b in pairs)
            ties = len(pairs) - wins - losses
            versus = WinRate(arm, first, wins, losses, ties, 0, wilson_interval(wins + ties / 2, len(pairs)))
        result.append(ArmReward(arm, fmean(scores[arm]), versus))
    shown = set(arms)
    return RewardSummary(name, first, result, [v for v in votes if {v.a, v.b} <= shown])
