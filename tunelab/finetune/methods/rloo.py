"""RLOO against the reward model (`rl.py` has what it shares with GRPO): each reply's baseline is
the mean reward of the other replies to the same prompt, with `--beta` pulling towards the
reference policy (the base, adapter off).
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
    from trl import RLOOConfig, RLOOTrainer

    return rl.build_trainer(RLOOConfig, RLOOTrainer, model, tokenizer, rows, args, output_dir, peft_config, callbacks, scorer, args.beta)
