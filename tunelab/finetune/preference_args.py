"""Arguments shared by the feedback trainers (KTO, DPO, reward model, GRPO / RLOO) and the bits they share.

One dataclass for the three methods because they differ in one or two knobs (`beta`,
`held_out`) and a user switching between them should not have to relearn flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tunelab.finetune.args import LoraArgs, refuse
from tunelab.finetune.distributed import deepspeed_kwargs, launched
from tunelab.finetune.report_to import report_kwargs


@dataclass
class PreferenceArgs(LoraArgs):
    """Hyper-parameters of a feedback run; defaults fit a ~100M-parameter model on a CPU."""

    lora_dropout: float = 0.0
    """Dropout on the LoRA input (0 keeps few-step runs deterministic)."""
    learning_rate: float = 1e-4
    """Peak learning rate; LoRA tolerates ~10x what full preference tuning uses."""
    max_steps: int = 20
    """Optimizer steps (feedback sets are small; epochs would mean a handful of steps)."""
    max_length: int = 256
    """Prompt + reply tokens; longer examples are truncated (the prompt's start goes first)."""
    # the four above redeclare LoraArgs fields: feedback runs are few-step runs on small sets
    beta: float = 0.1
    """KTO / DPO / GRPO / RLOO: strength of the pull towards the reference policy (the base, adapter off)."""
    held_out: float = 0.25
    """Reward model: fraction of the pairs kept out of training to measure accuracy."""
    num_generations: int = 4
    """GRPO / RLOO: replies sampled per prompt and compared with each other (batch_size must be a multiple)."""
    max_completion_length: int = 48
    """GRPO / RLOO: tokens per sampled reply."""
    temperature: float = 1.0
    """GRPO / RLOO: sampling temperature of the replies (diverse replies give the reward something to compare)."""

    MIN_BATCH_SIZE: ClassVar[int] = 2
    LM_HEAD_REFUSED: ClassVar[str] = "lm_head cannot be a LoRA target for preference training"

    def __post_init__(self) -> None:
        problems = self.lora_problems()
        if self.beta <= 0:
            problems.append(f"beta must be > 0 (got {self.beta})")
        if not 0 < self.held_out < 1:
            problems.append(f"held_out must be in (0, 1) (got {self.held_out})")
        if self.num_generations < 2:
            problems.append(f"num_generations must be >= 2 (got {self.num_generations})")
        if self.max_completion_length < 1:
            problems.append(f"max_completion_length must be >= 1 (got {self.max_completion_length})")
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0 (got {self.temperature})")
        refuse(problems)


def trainer_kwargs(args: PreferenceArgs, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments common to the three trl configs.

    CUDA is the default when present (bf16 where the GPU supports it); on CPU everything stays
    fp32 - trl's configs default to bf16, which a CPU emulates slowly.
    """
    import torch

    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_length": args.max_length,
        "seed": args.seed,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": args.save_steps,
        "save_total_limit": 1,
        **report_kwargs(args.report_to, output_dir.parent),  # output_dir is <run dir>/checkpoints
        "use_cpu": not cuda,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "fp16": False,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        **deepspeed_kwargs(args.deepspeed),
    }


def reference_settings(args: PreferenceArgs, n_rows: int) -> dict[str, Any]:
    """KTO / DPO: compute the reference policy's log-probabilities in one pass before training
    (same weights, adapter disabled) when the run sees every row at least once.

    The reference never changes, so the loss is the same; a step is then the policy's forward
    and backward only, and every epoch after the first skips the reference entirely. A run
    shorter than one epoch would pay for rows it never trains on, so it keeps the per-step pass.

    Not under `accelerate launch`: trl hands the precomputed values from the main process to the
    others through the dataset's cache file, and an in-memory dataset keeps that in a temp dir of
    each process's own, so the others fail to find it."""
    return {"precompute_ref_log_probs": args.max_steps * args.batch_size >= n_rows and not launched()}


def make_trainer(
    trainer_class: Any,
    config: Any,
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    peft_config: Any,
    callbacks: list[Any],
    **extra: Any,
) -> Any:
    """Build any of the trl trainers: they take the same arguments apart from their config (and GRPO / RLOO's reward)."""
    from datasets import Dataset

    return trainer_class(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        **extra,
    )
