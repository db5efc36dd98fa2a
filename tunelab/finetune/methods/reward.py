"""Reward model: the same small base with a one-output classification head and a LoRA adapter.

Trained with trl's RewardTrainer (Bradley-Terry loss on chosen vs rejected) on part of the
pairs; the rest is held out and the accuracy reported there is the honest figure (training
accuracy on a few dozen pairs says little). `tunelab.json` beside the adapter names the base
it was trained on: scoring with another base would read a head trained on other features.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.finetune import feedback_data
from tunelab.finetune.feedback_train import Fitted, MethodRows, Rows, lora_config
from tunelab.finetune.methods import method
from tunelab.finetune.preference_args import PreferenceArgs, make_trainer, trainer_kwargs
from tunelab.finetune.safe_files import safetensors_adapter
from tunelab.stores.files import atomic_write_text, cached_sha256
from tunelab.stores.runs import RunStore, reward_models

Row = TypeVar("Row")

META_FILE = "tunelab.json"
NOT_ON = "a reward model starts from the base (--on applies to kto and dpo)"
Messages = list[dict[str, str]]


@dataclass
class RewardMeta:
    """What a reward model was trained on and how well it ranks pairs it never saw."""

    base_sha256: str
    base_dir: str
    train_pairs: int
    held_out_pairs: int
    held_out_accuracy: float | None


def split_pairs(rows: list[Row], held_out: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, held-out): at least one pair on each side, chosen with a fixed seed."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * held_out)))
    return [rows[i] for i in order[n_eval:]], [rows[i] for i in order[:n_eval]]


def training_rows(conn: sqlite3.Connection, args: PreferenceArgs, bank: str | None) -> MethodRows:
    """The preference pairs, `held_out` of them kept back to measure the model on."""
    data = feedback_data.collect(conn)
    feedback_data.check_enough(data, "reward")
    rows, held_out = split_pairs(feedback_data.pair_rows(data), args.held_out, args.seed)
    return MethodRows(rows, held_out, skipped=data.skipped)


def load(base_dir: Path, start_adapter: Path | None, args: PreferenceArgs, chat_template: str | None) -> tuple[Any, Any, Any]:
    """The base with a fresh one-output head and a LoRA; never an adapter trained further."""
    if start_adapter is not None:
        raise TunelabError(NOT_ON)
    model, tokenizer = load_head_model(base_dir, chat_template)
    return model, tokenizer, lora_config(args, "SEQ_CLS")


def before(model: Any, tokenizer: Any, rows: Rows, args: PreferenceArgs, scorer: RewardModel | None) -> dict[str, float]:
    return {}  # an untrained head ranks pairs at random: the held-out accuracy after training is the figure


def after(fitted: Fitted, held_out: Rows) -> dict[str, float]:
    return {"held_out_accuracy": RewardModel(fitted.trainer.model, fitted.tokenizer).pair_accuracy(held_out)}


def export(out: Path, fitted: Fitted, base_dir: Path, base_sha256: str, held_out: Rows, base_gguf: Path | None) -> None:
    """The meta that names the base (a reward model is served by transformers, not as a GGUF)."""
    meta = RewardMeta(base_sha256, str(base_dir), len(fitted.rows), len(held_out), fitted.metrics["held_out_accuracy"])
    write_meta(out, meta)


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
    from trl import RewardConfig, RewardTrainer

    config = RewardConfig(**trainer_kwargs(args, output_dir))
    return make_trainer(RewardTrainer, config, model, tokenizer, rows, peft_config, callbacks)


def load_head_model(base_dir: Path, chat_template: str | None = None) -> Any:
    """The base as a sequence classifier with one output (the reward), its pad token set;
    `chat_template`: the one the GGUF is served with (see base_weights.load_tokenizer)."""
    from transformers import AutoModelForSequenceClassification

    from tunelab.finetune.base_weights import load_tokenizer

    tokenizer = load_tokenizer(base_dir, chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1, use_safetensors=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Load without transformers' progress bar and its "score.weight MISSING" report: the head is
    missing from the base by design (it comes with the adapter), and chat's stderr is for the user."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


class RewardModel:
    """A trained reward model, loaded for scoring (best-of-n, held-out accuracy, compare column)."""

    def __init__(self, model: Any, tokenizer: Any, meta: RewardMeta | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta

    @classmethod
    def load(cls, path: Path, base_dir: Path, base_sha256: str) -> RewardModel:
        """Load the adapter at `path` onto `base_dir`, refusing one trained on another base."""
        from peft import PeftModel

        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise TunelabError(
                f"{path} is not a tunelab reward model (no {META_FILE}); train one with `tunelab feedback train --method reward`"
            )
        meta = RewardMeta(**json.loads(meta_path.read_text(encoding="utf-8")))
        if meta.base_sha256 != base_sha256:
            raise TunelabError(
                f"reward model {path.name} was trained on another base (sha256 {meta.base_sha256[:12]}, this model is"
                f" {base_sha256[:12]}): retrain it on this model with `tunelab feedback train --method reward`"
            )
        safetensors_adapter(path)  # before anything is loaded: a pickled adapter is refused outright
        saved_template = path / "chat_template.jinja"  # the serving template it was trained with (write_output saves it)
        template = saved_template.read_text(encoding="utf-8") if saved_template.is_file() else None
        with quiet_loading():
            model, tokenizer = load_head_model(base_dir, template)
        return cls(PeftModel.from_pretrained(model, path), tokenizer, meta)

    def score(self, prompt: Messages, replies: list[str]) -> list[float]:
        """One reward per reply to `prompt` (higher = more like what the user preferred)."""
        import torch

        texts = [prompt + [{"role": "assistant", "content": r}] for r in replies]
        batch = self.tokenizer.apply_chat_template(texts, tokenize=True, return_dict=True, padding=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        return [float(x) for x in logits[:, 0].float().cpu()]

    def pair_accuracy(self, rows: list[dict[str, Any]]) -> float:
        """Share of pairs where the chosen reply scores above the rejected one."""
        right = 0
        for row in rows:
            chosen, rejected = self.score(row["prompt"], [row["chosen"][0]["content"], row["rejected"][0]["content"]])
            right += chosen > rejected
        return right / len(rows)


def write_meta(path: Path, meta: RewardMeta) -> None:
    atomic_write_text(path / META_FILE, json.dumps(asdict(meta), indent=2) + "\n")


def load_reward_model(settings: Settings, conn: sqlite3.Connection, name: str | None, model_path: Path) -> tuple[str, RewardModel]:
    """(name, scorer) of reward model `name`, or the newest one for `model_path`; refused for another base.

    The one loader: GRPO / RLOO train against it, and `Runtime.reward_model` serves it to best-of-n and compare."""
    sha = cached_sha256(conn, model_path)
    if name is None:
        found = reward_models(conn, sha)
        if not found:
            raise TunelabError(f"no reward model for {model_path.name}: train one with `tunelab feedback train --method reward`")
        run = found[0]
    else:
        run = RunStore(conn).get(name)
        if not method(run.method).reward_model:
            raise TunelabError(f"{name!r} is a {run.method} run, not a reward model (see `tunelab adapters runs`)")
        if run.status != "done":
            raise TunelabError(f"reward model {name!r} is not finished ({run.status}): `tunelab feedback train --resume {name}`")
    return run.name, RewardModel.load(settings.dirs.reward_models / run.name, Path(run.hf_dir), sha)
