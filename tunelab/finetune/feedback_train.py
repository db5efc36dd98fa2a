"""One feedback run, whatever the method: collect -> check -> train -> write the adapter atomically.

KTO, DPO and the reward model share this skeleton (litgpt keeps one skeleton per method file;
here the three method modules only build their trl trainer, and everything around it lives
once). The policy runs also report how the log-probability of the preferred replies moved,
measured on the same feedback before and after: the number that says the run did something.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.finetune import dpo, feedback_data, kto, reward
from tunelab.finetune.preference_args import PreferenceArgs
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
    full_ids = tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": completion}], tokenize=True, return_dict=True
    )["input_ids"]
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


def load_policy(base_dir: Path, start_adapter: Path | None) -> tuple[Any, Any]:
    """The base causal LM, with `start_adapter` loaded trainable when continuing from one."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    if start_adapter is not None:
        model = PeftModel.from_pretrained(model, start_adapter, is_trainable=True)
    return model, tokenizer


def lora_config(args: PreferenceArgs, task_type: str) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(args.target_modules),
        task_type=task_type,
    )


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
    files (the same layout as SFT adapters), so chat and compare can load it.
    """
    args = args or PreferenceArgs()
    data = feedback_data.collect(conn)
    feedback_data.check_enough(data, method)
    if method == "reward" and start_adapter is not None:
        raise TunelabError("a reward model starts from the base (--on applies to kto and dpo)")
    rows = feedback_data.kto_rows(data) if method == "kto" else feedback_data.pair_rows(data)
    metrics: dict[str, float] = {}
    if method == "reward":
        rows, held_out = reward.split_pairs(rows, args.held_out, args.seed)
        model, tokenizer = reward.load_head_model(base_dir)
        peft_config = lora_config(args, "SEQ_CLS")
    else:
        model, tokenizer = load_policy(base_dir, start_adapter)
        peft_config = None if start_adapter is not None else lora_config(args, "CAUSAL_LM")
        targets = preferred(rows, method)
        metrics["logp_preferred_before"] = mean_logprob(model, tokenizer, targets)

    with atomic_dir(output_dir) as tmp:
        trainer = BUILDERS[method](model, tokenizer, rows, args, tmp / "trainer", peft_config, callbacks or [])
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        policy = trainer.model
        if method == "reward":
            scorer = reward.RewardModel(policy, tokenizer)
            metrics["held_out_accuracy"] = scorer.pair_accuracy(held_out)
            reward.write_meta(
                tmp, reward.RewardMeta(base_sha256, str(base_dir), len(rows), len(held_out), metrics["held_out_accuracy"])
            )
        else:
            metrics["logp_preferred_after"] = mean_logprob(policy, tokenizer, targets)
        policy.save_pretrained(tmp, selected_adapters=["default"])
        tokenizer.save_pretrained(tmp)
        if base_gguf is not None and method != "reward":
            from tunelab.finetune.export_gguf import export_adapter
            from tunelab.finetune.sft import ADAPTER_GGUF

            export_adapter(tmp, base_gguf, tmp / ADAPTER_GGUF)
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steps = trainer.state.global_step
    return FeedbackRunResult(method, output_dir, steps, losses, seconds / max(1, steps), metrics)

