"""What best-of-n, the compare report's reward column and RL need from a reward model: one score
per reply to a prompt. `finetune.methods.reward.RewardModel` is the one tunelab trains; engine code
depends on this shape only, so it never imports the training stack."""

from __future__ import annotations

from typing import Protocol


class Scorer(Protocol):
    def score(self, prompt: list[dict[str, str]], replies: list[str]) -> list[float]:
        """One reward per reply (higher = closer to what the user preferred)."""
        ...
