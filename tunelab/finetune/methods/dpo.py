"""DPO on preference pairs (A/B votes, 👍 vs 👎 on the same prompt).

The reference policy is where the user started: the base with the new adapter disabled, or
the SFT adapter given with `--on` (trl keeps a frozen copy of that small adapter, not of the
model), so memory stays at one base model.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.finetune import feedback_data
from tunelab.finetune.feedback_train import Fitted, Messages, MethodRows, Rows, mean_logprob
from tunelab.finetune.feedback_train import export_policy as export
from tunelab.finetune.feedback_train import policy_model as load
from tunelab.finetune.preference_args import PreferenceArgs, make_trainer, reference_settings, trainer_kwargs

if TYPE_CHECKING:
    from tunelab.finetune.methods.reward import RewardModel

__all__ = ["after", "before", "build_trainer", "export", "load", "training_rows"]


def training_rows(conn: sqlite3.Connection, args: PreferenceArgs, bank: str | None) -> MethodRows:
    """Every preference pair (A/B votes, 👍 vs 👎 on one prompt), once there are enough."""
    data = feedback_data.collect(conn)
    feedback_data.check_enough(data, "dpo")
    return MethodRows(feedback_data.pair_rows(data), skipped=data.skipped)


def preferred(rows: Rows) -> list[tuple[Messages, str]]:
    """(prompt, reply) the user preferred: the chosen replies."""
    return [(r["prompt"], r["chosen"][0]["content"]) for r in rows]


def before(model: Any, tokenizer: Any, rows: Rows, args: PreferenceArgs, scorer: RewardModel | None) -> dict[str, float]:
    return {"logp_preferred_before": mean_logprob(model, tokenizer, preferred(rows))}


def after(fitted: Fitted, held_out: Rows) -> dict[str, float]:
    return {"logp_preferred_after": mean_logprob(fitted.trainer.model, fitted.tokenizer, preferred(fitted.rows))}


def build_trainer(
    model: Any,
    tokenizer: Any,
    rows: Rows,
    args: PreferenceArgs,
    output_dir: Path,
    peft_config: Any,
    callbacks: list[Any],
    scorer: RewardModel | None = None,
) -> Any:
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(**trainer_kwargs(args, output_dir), **reference_settings(args, len(rows)), beta=args.beta)
    return make_trainer(DPOTrainer, config, model, tokenizer, rows, peft_config, callbacks)
