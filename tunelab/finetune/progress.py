"""Training progress as plain events, so the CLI's progress bar and the TUI's loss plot read the same thing.

These records import nothing heavy: the CLI and the runtime read them at start-up, and a
transformers import there would add seconds to every command. The Trainer side that emits them
is `tunelab.finetune.progress_callback`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total: int
    loss: float | None
    lr: float | None
    tokens_per_s: float | None
    """Non-padding tokens trained per second since the previous event."""
    eta_s: float | None
    """Seconds left at the speed of the steps so far in this session."""

    def describe(self) -> str:
        """The event as one line of text (the CLI progress line and the TUI status read the same)."""
        loss = f"loss {self.loss:.4f}" if self.loss is not None else "loss -"
        tps = f"{self.tokens_per_s:.0f} tok/s" if self.tokens_per_s else "- tok/s"
        eta = f"ETA {self.eta_s:.0f}s" if self.eta_s is not None else "ETA -"
        return f"{self.step}/{self.total} · {loss} · lr {self.lr or 0:.2e} · {tps} · {eta}"


Listener = Callable[[TrainProgress], None]


MEASURED = (
    ("held_out_ppl", "held-out perplexity", ".2f"),
    ("mean_reward", "mean reward of sampled replies", ".3f"),
    ("logp_preferred", "mean log p of the preferred replies", ".2f"),
)
"""Before/after measures a finished run's metrics may carry (pre-training, RL, KTO/DPO), as shown."""


def measured_change(metrics: dict[str, Any]) -> str | None:
    """What the run measured before and after training, in one phrase (CLI and Train screen alike)."""
    for key, label, fmt in MEASURED:
        if f"{key}_before" in metrics:
            return f"{label} {metrics[f'{key}_before']:{fmt}} -> {metrics[f'{key}_after']:{fmt}}"
    return None
