"""DPO on preference pairs (A/B votes, 👍 vs 👎 on the same prompt).

The reference policy is where the user started: the base with the new adapter disabled, or
the SFT adapter given with `--on` (trl keeps a frozen copy of that small adapter, not of the
model), so memory stays at one base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.finetune.preference_args import PreferenceArgs, make_trainer, reference_settings, trainer_kwargs


def build_trainer(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], args: PreferenceArgs, output_dir: Path, peft_config: Any, callbacks: list[Any]
) -> Any:
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(**trainer_kwargs(args, output_dir), **reference_settings(args, len(rows)), beta=args.beta)
    return make_trainer(DPOTrainer, config, model, tokenizer, rows, peft_config, callbacks)
