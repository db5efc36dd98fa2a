"""What GRPO and RLOO share (`grpo.py`, `rloo.py`): RL against the reward model with trl's GRPO or RLOO trainer, sampling from the policy and scoring each
reply with the reward model tunelab trained on the 👍/👎 feedback (`reward.RewardModel`, the scorer
best-of-n uses, so training and serving read the same preference).

Both trainers sample `num_generations` replies per prompt and push the policy towards the
replies that score above their group's mean (GRPO: normalised by the group's spread; RLOO:
against the mean of the other replies). Prompts come from the feedback store (the prompts the
user rated or voted on) or from a bank's train split. The run reports the mean reward of
replies sampled (seeded) on the same prompts before and after: the number that says the
policy moved towards what the reward model prefers.
"""

from __future__ import annotations

import json
import sqlite3
from itertools import groupby
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.finetune import feedback_data
from tunelab.finetune.feedback_train import Fitted, MethodRows, Rows, policy_model
from tunelab.finetune.feedback_train import export_policy as export
from tunelab.finetune.methods.reward import RewardModel
from tunelab.finetune.preference_args import PreferenceArgs, make_trainer, trainer_kwargs

__all__ = ["after", "before", "export", "load", "training_rows"]
"""The steps GRPO and RLOO share (`feedback_train.FeedbackSteps`); each builds its own trainer."""
load = policy_model
MIN_PROMPTS = 2
EVAL_PROMPTS = 8
"""Prompts the before/after mean reward is measured on (the first of the run's prompts)."""
EVAL_SAMPLES = 4
"""Replies sampled per prompt for that measure."""
Messages = list[dict[str, str]]


def feedback_prompts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every distinct prompt the user rated a reply to or voted on, as sent (conversational rows)."""
    data = feedback_data.collect(conn)
    prompts = [row["prompt"] for row in data.unpaired] + [pair.prompt for pair in data.pairs]
    return unique_rows(prompts)


def bank_prompts(conn: sqlite3.Connection, bank: str) -> list[dict[str, Any]]:
    """A bank's train-split inputs, prompted as chat sends them (the test split never reaches training)."""
    from tunelab.finetune.methods.sft import training_rows

    _, rows = training_rows(conn, bank)
    return unique_rows([row["prompt"] for row in rows])


def unique_rows(prompts: list[Messages]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    rows = []
    for prompt in prompts:
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append({"prompt": prompt})
    return rows


def check_prompts(rows: list[dict[str, Any]], source: str) -> None:
    if len(rows) < MIN_PROMPTS:
        hint = "rate some replies or vote A/B first" if source == "feedback" else "add examples to the bank"
        raise TunelabError(f"only {len(rows)} prompt(s) from {source}: RL needs at least {MIN_PROMPTS} ({hint}, or use --bank BANK)")


def training_rows(conn: sqlite3.Connection, args: PreferenceArgs, bank: str | None) -> MethodRows:
    """The prompts to sample replies to: a bank's train split (with its example ids), or the rated prompts."""
    if bank:
        from tunelab.stores.banks import BankStore

        rows, ids = bank_prompts(conn, bank), [e.id for e in BankStore(conn).examples(bank, split="train")]
    else:
        rows, ids = feedback_prompts(conn), []
    check_prompts(rows, f"bank {bank!r}" if bank else "feedback")
    return MethodRows(rows, example_ids=ids)


def before(model: Any, tokenizer: Any, rows: Rows, args: PreferenceArgs, scorer: RewardModel | None) -> dict[str, float]:
    assert scorer is not None  # feedback_runs loads the reward model before the run is recorded
    return {"mean_reward_before": mean_reward(model, tokenizer, scorer, rows, args)}


def after(fitted: Fitted, held_out: Rows) -> dict[str, float]:
    assert fitted.scorer is not None  # fit() keeps the reward model it trained against
    return {"mean_reward_after": mean_reward(fitted.trainer.model, fitted.tokenizer, fitted.scorer, fitted.rows, fitted.args)}


class RewardFunction:
    """trl's reward function: each sampled reply scored by the reward model, in the chat template it was trained with."""

    __name__ = "reward_model"

    def __init__(self, scorer: RewardModel) -> None:
        self.scorer = scorer

    def __call__(self, prompts: list[Messages], completions: list[Messages], **kwargs: Any) -> list[float]:
        """One reward per completion; the replies to one prompt (trl passes each group's in a row) are
        scored in one batch - on a CPU the reward model's forward passes are most of a GRPO step."""
        rewards: list[float] = []
        for prompt, group in groupby(zip(prompts, completions), key=lambda pair: pair[0]):
            rewards += self.scorer.score(prompt, [completion[-1]["content"] for _, completion in group])
        return rewards


def sample_replies(model: Any, tokenizer: Any, prompt: Messages, n: int, max_new_tokens: int, temperature: float, seed: int) -> list[str]:
    """`n` seeded samples of the policy's reply to `prompt`."""
    import torch

    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=torch.ones_like(ids).to(device),
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)


def mean_reward(model: Any, tokenizer: Any, scorer: RewardModel, rows: list[dict[str, Any]], args: PreferenceArgs) -> float:
    """Mean reward of replies sampled on the first `EVAL_PROMPTS` prompts (same seeds before and after training)."""
    was_training = model.training
    model.eval()
    scores: list[float] = []
    for i, row in enumerate(rows[:EVAL_PROMPTS]):
        replies = sample_replies(model, tokenizer, row["prompt"], EVAL_SAMPLES, args.max_completion_length, args.temperature, args.seed + i)
        scores += scorer.score(row["prompt"], replies)
    model.train(was_training)
    return sum(scores) / len(scores)


def build_trainer(
    config_class: Any,
    trainer_class: Any,
    model: Any,
    tokenizer: Any,
    rows: Rows,
    args: PreferenceArgs,
    output_dir: Path,
    peft_config: Any,
    callbacks: list[Any],
    scorer: RewardModel | None,
    beta: float,
) -> Any:
    """trl's GRPO or RLOO trainer (`config_class`, `trainer_class`) with the reward model as its one reward function."""
    assert scorer is not None  # feedback_runs loads the reward model before the run is recorded
    if args.batch_size % args.num_generations:
        raise TunelabError(
            f"--batch-size ({args.batch_size}) must be a multiple of --num-generations ({args.num_generations}): "
            "each step trains on whole groups of replies to one prompt"
        )
    settings = {k: v for k, v in trainer_kwargs(args, output_dir).items() if k != "max_length"}  # prompts are not cut
    config = config_class(
        **settings,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        top_k=0,
        beta=beta,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return make_trainer(trainer_class, config, model, tokenizer, rows, peft_config, callbacks, reward_funcs=RewardFunction(scorer))
