"""LoRA SFT on a bank's train split with trl's SFTTrainer, ending in a llama.cpp adapter.

Continued pre-training (`pretrain.py`) is the same run on raw-text blocks, with the loss on
every token; `--on ADAPTER` trains an existing adapter further (SFT on top of pre-training).

The prompt is built exactly as at inference (the bank's instruction as system prompt, the
example's input as the user turn, rendered by the model's own chat template), and the loss
covers only the answer tokens, so the adapter learns to answer, not to echo prompts.

A run is `prepare`d (checks, token counts, warnings: cheap, shown before anything starts), then
`train`ed. The run row is written first; checkpoints land in the run dir every `save_steps`
and on cancel, so a cancelled or killed run continues with `resume`. The adapter (PEFT dir +
GGUF) is renamed into place and registered only when completely written.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.finetune import distributed
from tunelab.finetune.args import SFTArgs, lora_config
from tunelab.finetune.base_weights import BaseWeights, prepare_base
from tunelab.finetune.export_gguf import export_adapter, fit_targets
from tunelab.finetune.lifecycle import (
    ADAPTER_GGUF,
    HELD_OUT_FILE,
    META_FILE,
    ROWS_FILE,
    Plan,
    TrainResult,
    device,
    resume_point,
    stopped_run,
)
from tunelab.finetune.methods import method
from tunelab.finetune.methods.pretrain import perplexity
from tunelab.finetune.progress import Listener
from tunelab.finetune.report_to import report_kwargs
from tunelab.finetune.run_record import Recorder, oom_message, status_on_error
from tunelab.icl.prompt import task_messages
from tunelab.stores.files import atomic_dir, read_jsonl, write_jsonl
from tunelab.stores.models import ModelRegistry
from tunelab.stores.runs import Adapter, RunStore, Timings

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

RUN_EXTRAS = ("on", "corpus", "held_out")
"""Run settings stored beside the SFTArgs in the run row: the adapter continued, the pre-training corpus."""
Messages = list[dict[str, str]]


def prompt_messages(instruction: str, text: str) -> Messages:
    """The zero-shot prompt for one input: the one formatter's, as compare's zero-shot arm sends it."""
    return [m.as_dict() for m in task_messages(instruction, text)]


def training_rows(conn: sqlite3.Connection, bank: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """(example ids, rows) of the bank's train split - the test split never reaches training."""
    from tunelab.stores.banks import BankStore

    store = BankStore(conn)
    info = store.get(bank)
    examples = store.examples(bank, split="train")
    rows = [
        {"prompt": prompt_messages(info.instruction, e.input), "completion": [{"role": "assistant", "content": e.output}]} for e in examples
    ]
    return [e.id for e in examples], rows


def length_warnings(tokenizer: Any, rows: list[dict[str, Any]], max_length: int) -> list[str]:
    """Say how many examples will be cut at `max_length` (the end of their answer is lost)."""
    lengths = [
        len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"]) for r in rows
    ]
    long = [n for n in lengths if n > max_length]
    if not long:
        return []
    return [
        f"{len(long)} of {len(rows)} examples are longer than max_length {max_length} tokens (longest {max(long)}) "
        "and will be truncated: raise --max-length to train on their full answers"
    ]


def prepare(
    settings: Settings,
    conn: sqlite3.Connection,
    name: str,
    bank: str,
    args: SFTArgs,
    model: str | None = None,
    hf_dir: Path | None = None,
    on: str | None = None,
) -> Plan:
    """Check everything and record the run (status running); nothing is trained yet."""
    ids, rows = training_rows(conn, bank)
    return plan_for(settings, conn, name, bank, ids, rows, args, model, hf_dir, on)


def start_base(
    settings: Settings, conn: sqlite3.Connection, on: str | None, model: str | None, hf_dir: Path | None
) -> tuple[BaseWeights, Adapter | None]:
    """The base weights to train on: the chosen model's, or with `--on` the adapter's own base (and the adapter)."""
    if on is None:
        gguf_path = ModelRegistry(conn).resolve(settings.model if model is None else model)
        return prepare_base(conn, settings.dirs.models, gguf_path, hf_dir), None
    if model or hf_dir:
        raise TunelabError(f"--on {on} trains on that adapter's own base: drop --model / --hf-dir")
    store = RunStore(conn)
    start = store.adapter(on)
    parent = store.get(str(start.run_id))
    if method(parent.method).family != "bank":
        raise TunelabError(f"--on takes an SFT or pre-training adapter; {on!r} is a {parent.method} adapter")
    return prepare_base(conn, settings.dirs.models, Path(parent.base_gguf), Path(parent.hf_dir)), start


def plan_for(
    settings: Settings,
    conn: sqlite3.Connection,
    name: str,
    bank: str,
    ids: list[Any],
    rows: list[dict[str, Any]],
    args: SFTArgs,
    model: str | None = None,
    hf_dir: Path | None = None,
    on: str | None = None,
) -> Plan:
    """`prepare` once the bank's train rows are read: checks, base weights, warnings, the run row."""

    if not rows:
        raise TunelabError(f"bank {bank!r} has no train examples: import examples or re-split it")
    if len(rows) < 2:
        raise TunelabError(f"bank {bank!r} has only one train example: a LoRA needs at least 2 (add examples)")
    base, start = start_base(settings, conn, on, model, hf_dir)
    if start is None:  # a continued adapter keeps its own LoRA shape
        args = fit_targets(args, base.gguf_path, base.hf_dir)
    tokenizer = base.tokenizer()
    warnings = length_warnings(tokenizer, rows, args.max_length)
    run_dir = settings.dirs.runs / name
    run_args = {**args.to_dict(), "on": on}
    run = RunStore(conn).create(name, base.gguf_path, base.gguf_sha256, base.hf_dir, bank, ids, run_args, run_dir, device())
    write_jsonl(run_dir / ROWS_FILE, rows)
    return Plan(settings, conn, run, base, args, rows, warnings, start_adapter=start)


def prepare_resume(settings: Settings, conn: sqlite3.Connection, key: str, restart: bool = False) -> Plan:
    """A cancelled, failed or interrupted run, set to continue from its last checkpoint (or from step 0)."""
    store = RunStore(conn)
    run = stopped_run(store, key, "bank")
    plan = run_plan(settings, conn, run.id, None)
    checkpoint = resume_point(store, run, restart, "tunelab train")
    return replace(plan, run=store.get(str(run.id)), resume_from=checkpoint)


def run_plan(settings: Settings, conn: sqlite3.Connection, run_id: int, resume_from: Path | None) -> Plan:
    """The plan of a recorded run, from its row and the rows frozen in its run dir.

    What a resumed run continues with, and what the other processes of an `accelerate launch`
    train once the main one has recorded the run (`distributed.prepared_on_main`)."""
    store = RunStore(conn)
    run = store.get(str(run_id))
    rows_file = Path(run.run_dir) / ROWS_FILE
    rows = read_jsonl(rows_file)
    held_out = read_jsonl(Path(run.run_dir) / HELD_OUT_FILE)
    blocks = method(run.method).token_blocks
    if not rows or (blocks and not held_out):
        raise TunelabError(
            f"run {run.name!r} lost its training data ({rows_file.parent}): delete it "
            f"(`tunelab adapters delete {run.name}`) and train again"
        )
    if blocks:
        rows = [{"input_ids": block} for block in rows]
    values = {k: v for k, v in run.args.items() if k not in RUN_EXTRAS}
    on = run.args.get("on")
    base = prepare_base(conn, settings.dirs.models, Path(run.base_gguf), Path(run.hf_dir))
    return Plan(
        settings,
        conn,
        run,
        base,
        SFTArgs.from_dict(values),
        rows,
        resume_from=resume_from,
        held_out=held_out,
        start_adapter=store.adapter(on) if on else None,
    )


def sft_config(args: SFTArgs, output_dir: Path, completion_only: bool = True) -> Any:
    """trl settings: CUDA (bf16 where supported) whenever present, fp32 on CPU (bf16 emulation is slow).

    Pre-training blocks are full already (no packing) and every token is a target (no completion mask)."""
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        packing=args.packing and completion_only,
        packing_strategy="bfd",
        completion_only_loss=completion_only,
        gradient_checkpointing=args.gradient_checkpointing,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False,
        use_cpu=not cuda,
        seed=args.seed,
        data_seed=args.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        **report_kwargs(args.report_to, output_dir.parent),  # output_dir is <run dir>/checkpoints
        disable_tqdm=True,
        dataloader_pin_memory=cuda,
        **distributed.deepspeed_kwargs(args.deepspeed),
    )


def build_trainer(plan: Plan, callbacks: list[Any]) -> Any:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback, set_seed
    from trl import SFTTrainer

    set_seed(plan.args.seed)  # the LoRA init happens inside SFTTrainer, before Trainer seeds
    config = sft_config(plan.args, plan.run.checkpoints_dir, method(plan.method).completion_only)
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model: PreTrainedModel | PeftModel = AutoModelForCausalLM.from_pretrained(plan.base.hf_dir, dtype=dtype, use_safetensors=True)
    tokenizer = plan.base.tokenizer()
    missing = [m for m in plan.args.target_modules if not any(n.endswith(f".{m}") for n, _ in model.named_modules())]
    if missing:
        raise TunelabError(f"the model has no module(s) named {', '.join(missing)}: check --target-modules")
    peft_config = lora_config(plan.args)
    if plan.start_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, plan.start_adapter.peft_dir, is_trainable=True)
        peft_config = None
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(plan.rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to our listener, not to stdout
    return trainer


def train(plan: Plan, listener: Listener | None = None, cancel: threading.Event | None = None) -> TrainResult:
    """Train, export and register the adapter; a cancel leaves a checkpoint and status `cancelled`.

    Under `accelerate launch` every process trains; only the main one records progress and status
    and writes the adapter (the others return after training, with no adapter)."""
    import torch

    store = RunStore(plan.conn)
    run = plan.run
    main = distributed.is_main()
    recorder = Recorder(store, run, plan.resume_from is not None, listener) if main else None
    from tunelab.finetune.progress_callback import ProgressCallback  # transformers: only when training

    progress = ProgressCallback(recorder, cancel)
    started = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    held_out: dict[str, float] = {}
    with status_on_error(store, run.id, oom_message(plan.args)) if main else nullcontext():
        trainer = build_trainer(plan, [progress])
        if plan.held_out and main:
            held_out["held_out_ppl_before"] = perplexity(trainer.model, plan.held_out, plan.args.batch_size)
        trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from else None)
    if recorder is None:
        return TrainResult(run, None, progress.cancelled)
    seconds = time.perf_counter() - started
    rates = [h["tokens_per_s"] for h in recorder.history if h["tokens_per_s"]]
    timings: Timings = {
        "train_seconds": run.train_seconds + seconds,
        "tokens_per_s": sum(rates) / len(rates) if rates else None,
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }
    if progress.cancelled:
        store.set_status(run.id, "cancelled", "cancelled by the user", **timings)
        return TrainResult(store.get(str(run.id)), None, True)
    store.set_status(run.id, "running", **timings)
    if plan.held_out:
        held_out["held_out_ppl_after"] = perplexity(trainer.model, plan.held_out, plan.args.batch_size)
    adapter = write_adapter(plan, trainer, recorder.history, held_out)
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
    return TrainResult(store.get(str(run.id)), adapter, False)


def write_adapter(plan: Plan, trainer: Any, history: list[dict[str, float]], held_out: dict[str, float]) -> Adapter:
    """PEFT dir + GGUF adapter, renamed into place as one folder, then registered (run -> done)."""
    run = plan.run
    final = plan.settings.dirs.adapters / run.name
    losses = [h["loss"] for h in history]
    metrics = {
        "method": plan.method,
        "on": plan.start_adapter.name if plan.start_adapter else None,
        "steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_examples": len(plan.rows),
        **({"held_out_blocks": len(plan.held_out), **held_out} if plan.held_out else {}),
    }
    with atomic_dir(final) as tmp:
        trainer.model.save_pretrained(tmp, selected_adapters=["default"])
        export_adapter(tmp, plan.base.gguf_path, tmp / ADAPTER_GGUF)
        meta = {
            "run": run.name,
            "method": plan.method,
            "bank": run.bank,
            "base_gguf": str(plan.base.gguf_path),
            "base_sha256": plan.base.gguf_sha256,
            "args": run.args,
            "metrics": metrics,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    adapter = Adapter(run.name, run.id, run.bank, plan.base.gguf_sha256, str(final), str(final / ADAPTER_GGUF), metrics)
    return RunStore(plan.conn).add_adapter(adapter)
