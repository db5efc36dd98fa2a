"""One feedback run, whatever the method: collect -> check -> train -> write the adapter atomically.

KTO, DPO, the reward model and RL against it (GRPO / RLOO, `rl.py`) share this skeleton (litgpt keeps one skeleton per method file;
here the three method modules only build their trl trainer, and everything around it lives
once). The policy runs also report how the log-probability of the preferred replies moved,
measured on the same feedback before and after: the number that says the run did something;
the RL runs report the mean reward of replies sampled on their prompts before and after.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.finetune import dpo, feedback_data, kto, reward, rl
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.finetune.safe_files import safetensors_adapter
from tunelab.stores.files import atomic_dir

Messages = list[dict[str, str]]
BUILDERS = {"kto": kto.build_trainer, "dpo": dpo.build_trainer, "reward": reward.build_trainer}


@dataclass
class FeedbackRunResult:
    method: str
    output_dir: Path
    steps: int
    losses: list[float]
    seconds_per_step: float
    metrics: dict[str, float] = field(default_factory=dict)
    """Policy runs: `logp_preferred_before/after`; reward: `held_out_accuracy`, pair counts."""


def preferred(rows: list[dict[str, Any]], method: str) -> list[tuple[Messages, str]]:
    """(prompt, reply) the user preferred: 👍 completions for KTO, chosen replies for DPO."""
    if method == "kto":
        return [(r["prompt"], r["completion"][0]["content"]) for r in rows if r["label"]]
    return [(r["prompt"], r["chosen"][0]["content"]) for r in rows]


def completion_logprob(model: Any, tokenizer: Any, prompt: Messages, completion: str) -> float:
    """Sum of the policy's log-probabilities of `completion`'s tokens after the chat-templated prompt."""
    import torch

    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": completion}], tokenize=True, return_dict=True)[
        "input_ids"
    ]
    device = next(model.parameters()).device
    ids = torch.tensor([full_ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logps[len(prompt_ids) - 1 :].sum())


def mean_logprob(model: Any, tokenizer: Any, items: list[tuple[Messages, str]]) -> float:
    was_training = model.training
    model.eval()
    value = sum(completion_logprob(model, tokenizer, p, c) for p, c in items) / len(items)
    model.train(was_training)
    return value


def load_policy(base_dir: Path, start_adapter: Path | None, chat_template: str | None = None) -> tuple[Any, Any]:
    """The base causal LM, with `start_adapter` loaded trainable when continuing from one;
    `chat_template`: the one the GGUF is served with (see base_weights.load_tokenizer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunelab.finetune.base_weights import load_tokenizer

    tokenizer = load_tokenizer(base_dir, chat_template)
    model = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True)
    if start_adapter is None:
        return model, tokenizer
    return PeftModel.from_pretrained(model, safetensors_adapter(start_adapter), is_trainable=True), tokenizer


def lora_config(args: PreferenceArgs, task_type: str) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(args.target_modules),
        task_type=task_type,
    )


def method_rows(data: feedback_data.FeedbackData, method: str, args: PreferenceArgs) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, held-out rows): the reward model keeps some pairs back to measure itself."""
    feedback_data.check_enough(data, method)
    if method == "kto":
        return feedback_data.kto_rows(data), []
    rows = feedback_data.pair_rows(data)
    return reward.split_pairs(rows, args.held_out, args.seed) if method == "reward" else (rows, [])


@dataclass
class Fitted:
    """A trainer that has run (to the end, or to a cancel), with what its outputs need."""

    method: str
    trainer: Any
    tokenizer: Any
    seconds: float
    metrics: dict[str, float]
    targets: list[tuple[Messages, str]]
    n_rows: int
    scorer: Any = None
    """GRPO / RLOO: the reward model the policy was trained against."""
    prompts: list[dict[str, Any]] = field(default_factory=list)
    """GRPO / RLOO: the prompt rows (the before/after mean reward is measured on them)."""
    args: PreferenceArgs | None = None


def fit(
    method: str,
    rows: list[dict[str, Any]],
    base_dir: Path,
    args: PreferenceArgs,
    checkpoints_dir: Path,
    start_adapter: Path | None = None,
    callbacks: list[Any] | None = None,
    resume_from: Path | None = None,
    scorer: Any = None,
    chat_template: str | None = None,
) -> Fitted:
    """Load the model for `method` and train it; checkpoints land in `checkpoints_dir`.

    `scorer`: the reward model GRPO / RLOO train against; `chat_template`: the serving one."""
    from transformers import PrinterCallback, set_seed

    set_seed(args.seed)  # before any model is built: the reward head and the LoRA init happen before trl's Trainer seeds
    if method == "reward" and start_adapter is not None:
        raise TunelabError("a reward model starts from the base (--on applies to kto and dpo)")
    metrics: dict[str, float] = {}
    targets: list[tuple[Messages, str]] = []
    if method == "reward":
        model, tokenizer = reward.load_head_model(base_dir, chat_template)
        peft_config = lora_config(args, "SEQ_CLS")
    elif method in rl.METHODS:
        model, tokenizer = load_policy(base_dir, start_adapter, chat_template)
        peft_config = None if start_adapter is not None else lora_config(args, "CAUSAL_LM")
        metrics["mean_reward_before"] = rl.mean_reward(model, tokenizer, scorer, rows, args)
        trainer = rl.build_trainer(model, tokenizer, rows, args, checkpoints_dir, peft_config, callbacks or [], method, scorer)
    else:
        model, tokenizer = load_policy(base_dir, start_adapter, chat_template)
        peft_config = None if start_adapter is not None else lora_config(args, "CAUSAL_LM")
        targets = preferred(rows, method)
        metrics["logp_preferred_before"] = mean_logprob(model, tokenizer, targets)
    if method not in rl.METHODS:
        trainer = BUILDERS[method](model, tokenizer, rows, args, checkpoints_dir, peft_config, callbacks or [])
    trainer.remove_callback(PrinterCallback)  # progress goes to the callbacks, not to stdout
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return Fitted(method, trainer, tokenizer, time.perf_counter() - started, metrics, targets, len(rows), scorer, rows, args)


def write_output(
    fitted: Fitted, out: Path, base_dir: Path, base_sha256: str, held_out: list[dict[str, Any]], base_gguf: Path | None = None
) -> dict[str, float]:
    """Save the trained adapter into `out` (PEFT files, GGUF for policies, meta for reward models); its metrics."""
    metrics = dict(fitted.metrics)
    policy = fitted.trainer.model
    if fitted.method == "reward":
        metrics["held_out_accuracy"] = reward.RewardModel(policy, fitted.tokenizer).pair_accuracy(held_out)
        meta = reward.RewardMeta(base_sha256, str(base_dir), fitted.n_rows, len(held_out), metrics["held_out_accuracy"])
        reward.write_meta(out, meta)
    elif fitted.method in rl.METHODS:
        assert fitted.args is not None  # fit() keeps the arguments it trained with
        metrics["mean_reward_after"] = rl.mean_reward(policy, fitted.tokenizer, fitted.scorer, fitted.prompts, fitted.args)
    else:
        metrics["logp_preferred_after"] = mean_logprob(policy, fitted.tokenizer, fitted.targets)
    policy.save_pretrained(out, selected_adapters=["default"])
    fitted.tokenizer.save_pretrained(out)
    if base_gguf is not None and fitted.method != "reward":
        from tunelab.finetune.export_gguf import export_adapter
        from tunelab.finetune.sft import ADAPTER_GGUF

        export_adapter(out, base_gguf, out / ADAPTER_GGUF)
    return metrics


def losses(trainer: Any) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def train(
    conn: sqlite3.Connection,
    method: str,
    base_dir: Path,
    base_sha256: str,
    output_dir: Path,
    args: PreferenceArgs | None = None,
    start_adapter: Path | None = None,
    callbacks: list[Any] | None = None,
    base_gguf: Path | None = None,
) -> FeedbackRunResult:
    """Train `method` on the stored feedback; the result is at `output_dir` only if training finished.

    With `base_gguf`, a policy adapter is also exported as a llama.cpp GGUF LoRA beside the PEFT
    files (the same layout as SFT adapters), so chat and compare can load it. This is the bare
    trainer call; `feedback_runs` wraps the same steps in a recorded, resumable run.
    """
    args = args or PreferenceArgs()
    rows, held_out = method_rows(feedback_data.collect(conn), method, args)
    from tunelab.engine.chat_template import gguf_template

    template = gguf_template(base_gguf) if base_gguf is not None else None
    with tempfile.TemporaryDirectory(prefix="tunelab-feedback-") as checkpoints:
        fitted = fit(method, rows, base_dir, args, Path(checkpoints), start_adapter, callbacks, chat_template=template)
    with atomic_dir(output_dir) as tmp:
        metrics = write_output(fitted, tmp, base_dir, base_sha256, held_out, base_gguf)
    steps = fitted.trainer.state.global_step
    return FeedbackRunResult(method, output_dir, steps, losses(fitted.trainer), fitted.seconds / max(1, steps), metrics)
