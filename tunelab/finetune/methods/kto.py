"""KTO on unpaired 👍 / 👎 ratings: the natural fit for thumbs, which rarely come in pairs.

The policy is the base with a fresh LoRA adapter (reference = the same model with the adapter
disabled), or an existing adapter trained further (trl keeps a frozen copy of that adapter as
the reference). Either way there is one copy of the base weights in memory.
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
    """Every 👍 / 👎 rating as one unpaired row, once there are enough of both."""
    data = feedback_data.collect(conn)
    feedback_data.check_enough(data, "kto")
    return MethodRows(feedback_data.kto_rows(data), skipped=data.skipped)


def preferred(rows: Rows) -> list[tuple[Messages, str]]:
    """(prompt, reply) the user preferred: the 👍 completions."""
    return [(r["prompt"], r["completion"][0]["content"]) for r in rows if r["label"]]


def before(model: Any, tokenizer: Any, rows: Rows, args: PreferenceArgs, scorer: RewardModel | None) -> dict[str, float]:
    return {"logp_preferred_before": mean_logprob(model, tokenizer, preferred(rows))}


def after(fitted: Fitted, held_out: Rows) -> dict[str, float]:
    return {"logp_preferred_after": mean_logprob(fitted.trainer.model, fitted.tokenizer, preferred(fitted.rows))}


def balanced_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) so both kinds weigh the same in total.

    The KTO paper asks for λ_D·n_D / (λ_U·n_U) in [1, 4/3]; we aim at 1 by up-weighting the
    rarer kind, which keeps the common kind's weight at 1 (and the learning rate meaningful).
    """
    return max(1.0, n_undesirable / n_desirable), max(1.0, n_desirable / n_undesirable)


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
    from trl import KTOConfig, KTOTrainer

    n_up = sum(1 for r in rows if r["label"])
    desirable, undesirable = balanced_weights(n_up, len(rows) - n_up)
    config = KTOConfig(
        **trainer_kwargs(args, output_dir),
        **reference_settings(args, len(rows)),
        beta=args.beta,
        desirable_weight=desirable,
        undesirable_weight=undesirable,
    )
    return make_trainer(KTOTrainer, config, model, tokenizer, rows, peft_config, callbacks)
