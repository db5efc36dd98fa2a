"""Hyper-parameters of a LoRA SFT run: one dataclass, the source of the CLI flags, the TUI form and the run record.

Each field's docstring is its help text (`field_docs` reads them), so the flags can't drift from
the dataclass (trl generates `--help` from its config dataclasses the same way).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from tunelab.errors import TunelabError
from tunelab.finetune.distributed import deepspeed_config, deepspeed_problem
from tunelab.finetune.report_to import REPORT_TO, report_to_problem

RENAMED = {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout", "lr": "learning_rate"}
"""SFTArgs' old spelling -> the peft / trl name both trainers now share. Runs stored before the
rename keep the old keys in their `args_json` (`from_dict` reads them), and the old flags stay
as hidden aliases."""


class StoredArgs:
    """Round trip of an argument dataclass through a run's `args_json` (checked when read back)."""

    target_modules: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)  # type: ignore[call-overload]  # a mixin: mypy cannot tell that self is a dataclass
        values["target_modules"] = list(self.target_modules)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        values = {RENAMED.get(key, key): value for key, value in values.items()}
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # a mixin: cls is a dataclass
        unknown = sorted(set(values) - known)
        if unknown:
            raise TunelabError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**values)


@dataclass
class LoraArgs(StoredArgs):
    """The settings every method's run shares (the LoRA, the batch, checkpoints, logging), declared
    and checked once, with SFT's defaults; each method's dataclass adds its own knobs and
    redeclares a field only where its default differs (`PreferenceArgs`).

    `lora_problems` lists what is wrong with these; the subclass's `__post_init__` adds its own
    problems and `refuse`s them all in one message."""

    lora_r: int = 8
    """LoRA rank: size of the update matrices (more = more capacity, bigger adapter)."""
    lora_alpha: float = 16.0
    """LoRA alpha: the update is scaled by alpha / r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Linear layers that get an adapter (names of the HF modules, e.g. q_proj,v_proj,up_proj; never lm_head)."""
    learning_rate: float = 2e-4
    """Peak learning rate (linear decay to 0)."""
    max_steps: int | None = None
    """Optimizer steps; overrides epochs."""
    batch_size: int = 4
    """Examples per process (device) per micro-batch (feedback runs need at least 2: KTO's KL term pairs each example with a neighbour)."""
    max_length: int = 512
    """Prompt + answer tokens per example; longer examples are truncated (with a warning)."""
    seed: int = 0
    """Seed for the LoRA init, the data order and any held-out split."""
    save_steps: int = 10
    """Write a resumable checkpoint every this many steps (and on cancel)."""
    report_to: str = field(default="none", metadata={"choices": REPORT_TO})
    """Also send the training metrics to tensorboard (event files in the run's logs/ folder), wandb or mlflow."""
    deepspeed: str = ""
    """DeepSpeed config JSON for the Trainer (e.g. docs/deepspeed_zero2.json; needs the deepspeed package)."""

    MIN_BATCH_SIZE: ClassVar[int] = 1
    """KTO pairs each example with a neighbour for its KL term, so the feedback methods need 2."""
    LM_HEAD_REFUSED: ClassVar[str] = "lm_head/embed_tokens cannot be targets: llama.cpp adapters need them untouched (tied embeddings)"
    """Why lm_head is never a target (the feedback methods say it their way: trl's losses read its weight)."""

    def lora_problems(self) -> list[str]:
        """Problems with the shared settings; normalises target_modules and the deepspeed path on the way."""
        self.target_modules = tuple(self.target_modules)
        problems = [p for p in (report_to_problem(self.report_to), deepspeed_problem(self.deepspeed)) if p]
        self.deepspeed = deepspeed_config(self.deepspeed)
        if self.lora_r < 1:
            problems.append(f"lora_r must be >= 1 (got {self.lora_r})")
        if self.lora_alpha <= 0:
            problems.append(f"lora_alpha must be > 0 (got {self.lora_alpha})")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        if not self.target_modules:
            problems.append("target_modules must name at least one module")
        if "lm_head" in self.target_modules or "embed_tokens" in self.target_modules:
            problems.append(self.LM_HEAD_REFUSED)
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1 (got {self.max_steps})")
        if self.batch_size < self.MIN_BATCH_SIZE:
            problems.append(f"batch_size must be >= {self.MIN_BATCH_SIZE} (got {self.batch_size})")
        if self.max_length < 16:
            problems.append(f"max_length must be >= 16 (got {self.max_length})")
        if self.save_steps < 1:
            problems.append(f"save_steps must be >= 1 (got {self.save_steps})")
        return problems


def lora_config(args: LoraArgs, task_type: str = "CAUSAL_LM") -> Any:
    """peft's LoraConfig for a run: trl's trainers take it as `peft_config` (SEQ_CLS for the reward head)."""
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,  # type: ignore[arg-type]  # peft annotates int; its scaling alpha / r takes a float
        lora_dropout=args.lora_dropout,
        target_modules=list(args.target_modules),
        task_type=task_type,
    )


def refuse(problems: list[str]) -> None:
    """Raise every problem with a run's settings in one line, or nothing when there are none."""
    if problems:
        raise TunelabError("bad training settings: " + "; ".join(problems))


@dataclass
class SFTArgs(LoraArgs):
    """LoRA SFT settings; defaults fit a ~100M-parameter model and a few hundred examples."""

    epochs: float = 3.0
    """Passes over the train split (ignored when max_steps is set)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size x processes x grad_accum)."""
    packing: bool = True
    """Pack examples into padding-free batches (no compute spent on padding)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% slower (for long max_length on a GPU)."""

    def __post_init__(self) -> None:
        problems = self.lora_problems()
        if self.epochs <= 0:
            problems.append(f"epochs must be > 0 (got {self.epochs})")
        if self.grad_accum < 1:
            problems.append(f"grad_accum must be >= 1 (got {self.grad_accum})")
        refuse(problems)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after each field) of a dataclass and its dataclass bases, by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if "__dataclass_fields__" in vars(klass):
            docs.update(own_field_docs(klass))
    return {f.name: docs[f.name] for f in fields(cls) if f.name in docs}  # not the ClassVar notes


def own_field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings written in `cls`'s own body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    definition = tree.body[0]
    assert isinstance(definition, ast.ClassDef)  # the source of a class
    body = definition.body
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs
