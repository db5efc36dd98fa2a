"""One feedback run, whatever the method: collect -> check -> train -> write the adapter atomically.

KTO, DPO, the reward model and RL against it (GRPO / RLOO) share this skeleton (litgpt keeps one
skeleton per method file): each method's module (`finetune.methods.<name>`, found through the
methods table) gives the steps in `FeedbackSteps` - its rows, its model, its trl trainer, what it
measures before and after, its export - and everything around them lives once here. The policy
runs report how the log-probability of the preferred replies moved, measured on the same feedback
before and after: the number that says the run did something; the RL runs report the mean reward
of replies sampled on their prompts before and after.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from tunelab.errors import TunelabError
from tunelab.finetune.args import lora_config
from tunelab.finetune.lifecycle import ADAPTER_GGUF
from tunelab.finetune.methods import method, names
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.finetune.safe_files import safetensors_adapter
from tunelab.stores.files import atomic_dir

if TYPE_CHECKING:
    from tunelab.finetune.methods.reward import RewardModel

Messages = list[dict[str, str]]
Rows = list[dict[str, Any]]


@dataclass
class MethodRows:
    """What a method trains on, read and checked before any model is loaded."""

    rows: Rows
    held_out: Rows = field(default_factory=list)
    """Reward model: pairs kept out of training to measure it."""
    example_ids: list[Any] = field(default_factory=list)
    """GRPO / RLOO on a bank: the examples whose inputs are the prompts (the leakage guard reads them)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Feedback left out and why (ties, identical pair texts)."""


class FeedbackSteps(Protocol):
    """What a feedback method's module provides; `fit` and `write_output` call them in order."""

    def training_rows(self, conn: sqlite3.Connection, args: PreferenceArgs, bank: str | None) -> MethodRows: ...

    def load(self, base_dir: Path, start_adapter: Path | None, args: PreferenceArgs, chat_template: str | None) -> tuple[Any, Any, Any]:
        """(model, tokenizer, peft_config); peft_config None when a start adapter is trained further."""
        ...

    def before(self, model: Any, tokenizer: Any, rows: Rows, args: PreferenceArgs, scorer: RewardModel | None) -> dict[str, float]: ...

    def build_trainer(
        self,
        model: Any,
        tokenizer: Any,
        rows: Rows,
        args: PreferenceArgs,
        output_dir: Path,
        peft_config: Any,
        callbacks: list[Any],
        scorer: RewardModel | None = None,
    ) -> Any: ...

    def after(self, fitted: Fitted, held_out: Rows) -> dict[str, float]: ...

    def export(self, out: Path, fitted: Fitted, base_dir: Path, base_sha256: str, held_out: Rows, base_gguf: Path | None) -> None:
        """Write what serves the trained model beside its PEFT files (a GGUF adapter, a reward model's meta)."""
        ...


def steps(name: str) -> FeedbackSteps:
    """The steps of feedback method `name`, from its module in the methods table."""
    spec = method(name)
    if spec.family != "feedback":
        raise TunelabError(f"unknown method {name!r} (choose from {', '.join(names('feedback'))})")
    return cast(FeedbackSteps, spec.module())


@dataclass
class FeedbackRunResult:
    method: str
    output_dir: Path
    steps: int
    losses: list[float]
    seconds_per_step: float
    metrics: dict[str, float] = field(default_factory=dict)
    """Policy runs: `logp_preferred_before/after`; reward: `held_out_accuracy`, pair counts."""


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


def policy_model(base_dir: Path, start_adapter: Path | None, args: PreferenceArgs, chat_template: str | None) -> tuple[Any, Any, Any]:
    """`FeedbackSteps.load` of the policy methods: the causal LM with a fresh LoRA, or the start adapter trainable."""
    model, tokenizer = load_policy(base_dir, start_adapter, chat_template)
    return model, tokenizer, None if start_adapter is not None else lora_config(args, "CAUSAL_LM")


def export_policy(out: Path, fitted: Fitted, base_dir: Path, base_sha256: str, held_out: Rows, base_gguf: Path | None) -> None:
    """`FeedbackSteps.export` of the policy methods: the llama.cpp GGUF adapter (when the base GGUF is known)."""
    if base_gguf is not None:
        from tunelab.finetune.export_gguf import export_adapter

        export_adapter(out, base_gguf, out / ADAPTER_GGUF)


@dataclass
class Fitted:
    """A trainer that has run (to the end, or to a cancel), with what its outputs need."""

    method: str
    trainer: Any
    tokenizer: Any
    seconds: float
    metrics: dict[str, float]
    rows: Rows
    args: PreferenceArgs
    scorer: RewardModel | None = None
    """GRPO / RLOO: the reward model the policy was trained against."""


def fit(
    method: str,
    rows: Rows,
    base_dir: Path,
    args: PreferenceArgs,
    checkpoints_dir: Path,
    start_adapter: Path | None = None,
    callbacks: list[Any] | None = None,
    resume_from: Path | None = None,
    scorer: RewardModel | None = None,
    chat_template: str | None = None,
) -> Fitted:
    """Load the model for `method` and train it; checkpoints land in `checkpoints_dir`.

    `scorer`: the reward model GRPO / RLOO train against; `chat_template`: the serving one."""
    from transformers import PrinterCallback, set_seed

    set_seed(args.seed)  # before any model is built: the reward head and the LoRA init happen before trl's Trainer seeds
    method_steps = steps(method)
    model, tokenizer, peft_config = method_steps.load(base_dir, start_adapter, args, chat_template)
    metrics = method_steps.before(model, tokenizer, rows, args, scorer)
    trainer = method_steps.build_trainer(model, tokenizer, rows, args, checkpoints_dir, peft_config, callbacks or [], scorer)
    trainer.remove_callback(PrinterCallback)  # progress goes to the callbacks, not to stdout
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return Fitted(method, trainer, tokenizer, time.perf_counter() - started, metrics, rows, args, scorer)


def write_output(
    fitted: Fitted, out: Path, base_dir: Path, base_sha256: str, held_out: Rows, base_gguf: Path | None = None
) -> dict[str, float]:
    """Save the trained adapter into `out` (PEFT files, then the method's export); its metrics."""
    method_steps = steps(fitted.method)
    fitted.metrics.update(method_steps.after(fitted, held_out))
    fitted.trainer.model.save_pretrained(out, selected_adapters=["default"])
    fitted.tokenizer.save_pretrained(out)
    method_steps.export(out, fitted, base_dir, base_sha256, held_out, base_gguf)
    return dict(fitted.metrics)


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
    data = steps(method).training_rows(conn, args, None)
    from tunelab.engine.chat_template import gguf_template

    template = gguf_template(base_gguf) if base_gguf is not None else None
    with tempfile.TemporaryDirectory(prefix="tunelab-feedback-") as checkpoints:
        fitted = fit(method, data.rows, base_dir, args, Path(checkpoints), start_adapter, callbacks, chat_template=template)
    with atomic_dir(output_dir) as tmp:
        metrics = write_output(fitted, tmp, base_dir, base_sha256, data.held_out, base_gguf)
    n_steps = fitted.trainer.state.global_step
    return FeedbackRunResult(method, output_dir, n_steps, losses(fitted.trainer), fitted.seconds / max(1, n_steps), metrics)
