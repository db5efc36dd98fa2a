"""GRPO against the reward model (`rl.py` has what it shares with RLOO): each reply's advantage is
its reward against its group's mean, normalised by the group's spread. It trains with no KL term
(trl's `beta` 0: no reference pass), so `--beta` applies to RLOO only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.finetune.methods import rl
from tunelab.finetune.methods.reward import RewardModel
from tunelab.finetune.methods.rl import after, before, export, load, training_rows
from tunelab.finetune.preference_args import PreferenceArgs

__all__ = ["after", "before", "build_trainer", "export", "load", "training_rows"]


def build_trainer(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    args: PreferenceArgs,
    output_dir: Path,
    peft_config: Any,
    callbacks: list[Any],
    scorer: RewardModel | None = None,
) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    return rl.build_trainer(GRPOConfig, GRPOTrainer, model, tokenizer, rows, args, output_dir, peft_config, callbacks, scorer, 0.0)
