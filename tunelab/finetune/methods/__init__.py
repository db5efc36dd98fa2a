"""The training methods, one module each, and the one table that says what each is.

The CLI, the Train screen, the run life cycle and the feedback trainer read what differs between
methods from `METHODS` (which command trains it, what its rows are called, whether it yields a
served adapter or a reward model, whether it trains against a reward model) instead of testing
the method's name. The table holds data and the name of the method's module; the module holds the
code (its rows, its trl trainer, what it measures, its export), imported when a run needs it, so
reading the table (`tunelab --help`, the run list) loads no torch.

- `sft`, `pretrain`: LoRA on a bank's train split / on raw text, trained by `sft.train`.
- `kto`, `dpo`, `reward`, `grpo`, `rloo`: trained on the feedback by `feedback_runs.train`; their
  modules share one interface (`FeedbackSteps` in `feedback_train`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from tunelab.errors import TunelabError

Family = Literal["bank", "feedback"]


@dataclass(frozen=True)
class Method:
    """One training method as the rest of tunelab sees it."""

    name: str
    label: str
    """How the Train screen names it."""
    family: Family
    """`bank`: SFTArgs, `tunelab train`, `sft.train`; `feedback`: PreferenceArgs, `tunelab feedback train`, `feedback_runs.train`."""
    rows: str
    """What its training rows are, for the line that starts a run ("pairs", "text blocks")."""
    unpaired: bool = False
    """It trains on single 👍 / 👎 ratings rather than preference pairs (KTO)."""
    reward_model: bool = False
    """It trains a reward model (under reward_models/, no GGUF, no `--on`), not a served adapter."""
    against_reward_model: bool = False
    """It samples replies and trains them against a finished reward model (prompts as rows)."""
    completion_only: bool = True
    """The loss covers the answer only (SFT); pre-training's blocks are all target."""
    token_blocks: bool = False
    """Its rows are token blocks with held-out blocks to measure perplexity on (pre-training)."""

    @property
    def command(self) -> str:
        """The command that starts and resumes its runs."""
        return "tunelab train" if self.family == "bank" else "tunelab feedback train"

    def module(self) -> ModuleType:
        """The method's code: imported on first use (it imports trl and torch)."""
        return importlib.import_module(f"{__name__}.{self.name}")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sft", "SFT", "bank", "train examples"),
        Method("pretrain", "pre-train", "bank", "text blocks", completion_only=False, token_blocks=True),
        Method("kto", "KTO", "feedback", "ratings", unpaired=True),
        Method("dpo", "DPO", "feedback", "pairs"),
        Method("reward", "reward model", "feedback", "pairs", reward_model=True),
        Method("grpo", "GRPO", "feedback", "prompts", against_reward_model=True),
        Method("rloo", "RLOO", "feedback", "prompts", against_reward_model=True),
    )
}


def method(name: str) -> Method:
    """The method `name` (a run's `method` column), refused when unknown."""
    try:
        return METHODS[name]
    except KeyError:
        raise TunelabError(f"unknown training method {name!r} (one of: {', '.join(METHODS)})") from None


def names(family: Family) -> tuple[str, ...]:
    """The methods one command trains, in the table's order (`--method` choices)."""
    return tuple(m.name for m in METHODS.values() if m.family == family)
