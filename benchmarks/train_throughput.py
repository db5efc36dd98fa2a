"""tunelab's LoRA SFT vs a plain padded HF Trainer baseline, and llama.cpp decode with vs without the adapter.

One run, same data (the packaged `sentiment` demo bank's train rows, prompts of varied length),
same model (the bundled GGUF dequantised), same LoRA, batch size, max length and steps:

- tunelab: `sft.train` (trl SFTTrainer, completion-only loss, packing into padding-free batches
  with position ids - the CUDA default and also what it does on CPU);
- baseline: transformers `Trainer` + peft `get_peft_model`, each example tokenised alone and
  batches padded to their longest row (`DataCollatorForSeq2Seq`), prompt tokens masked in labels.

Throughput is non-padding tokens per second per optimizer step (the same `ProgressCallback`
measures both; trl reports `num_tokens`, the baseline `num_input_tokens_seen="non_padding"`);
the first step (warm-up) is left out and the median is reported. Then the adapter tunelab wrote
is loaded in llama.cpp and greedy decode tok/s is measured with it and without it, interleaved
(target >= 90 % of the base on CPU).

    .venv/bin/python benchmarks/train_throughput.py [--steps 8] [--batch-size 4] [--max-length 128] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import itertools

from tunelab.config import Settings
from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.llama_engine import LlamaEngine
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.base_weights import prepare_base
from tunelab.finetune.methods import sft
from tunelab.finetune.progress import TrainProgress
from tunelab.finetune.progress_callback import ProgressCallback
from tunelab.runtime.arm_runner import greedy
from tunelab.stores import demo_banks
from tunelab.stores.db import connect
from tunelab.stores.model_files import bundled_chat_model

DECODE_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def rows_from_demo(size: int) -> list[dict[str, Any]]:
    bank = demo_banks.sentiment(size=size, max_chars=400)
    return [
        {"prompt": sft.prompt_messages(bank.instruction, r.input), "completion": [{"role": "assistant", "content": r.output}]}
        for r in bank.rows
    ]


def steady_rate(events: list[TrainProgress]) -> float:
    """Median tokens/s over the steps after the first (warm-up: allocation, first kernels)."""
    rates = [e.tokens_per_s for e in events[1:] if e.tokens_per_s]
    return statistics.median(rates)


def step_seconds(times: list[float]) -> float:
    return statistics.median(b - a for a, b in itertools.pairwise(times))


def run_tunelab(
    settings: Settings, conn: Any, hf_dir: Path, rows: list[dict[str, Any]], args: SFTArgs
) -> tuple[list[TrainProgress], list[float], Path]:
    events: list[TrainProgress] = []
    times: list[float] = []

    def listener(event: TrainProgress) -> None:
        events.append(event)
        times.append(time.perf_counter())

    plan = sft.plan_for(settings, conn, f"bench-{int(time.time())}", "sentiment", list(range(len(rows))), rows, args, hf_dir=hf_dir)
    result = sft.train(plan, listener)
    assert result.adapter is not None
    return events, times, Path(result.adapter.gguf_path)


def padded_dataset(tokenizer: Any, rows: list[dict[str, Any]], max_length: int) -> Any:
    """Each example alone: prompt (with generation prompt) + answer, labels -100 on the prompt."""
    from datasets import Dataset

    records = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)["input_ids"][:max_length]
        labels = [-100] * min(len(prompt), len(full)) + full[len(prompt) :]
        records.append({"input_ids": full, "attention_mask": [1] * len(full), "labels": labels})
    return Dataset.from_list(records)


def padding_share(dataset: Any, batch_size: int, seed: int) -> float:
    """Share of the padded baseline's token positions that are padding (seeded shuffle, batches of
    `batch_size`): the compute a padding-free batch can save, whatever the machine's load."""
    import random

    lengths = [len(ids) for ids in dataset["input_ids"]]
    random.Random(seed).shuffle(lengths)
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    return 1 - sum(sum(b) for b in batches) / sum(max(b) * len(b) for b in batches)


def run_baseline(hf_dir: Path, rows: list[dict[str, Any]], args: SFTArgs, out: Path) -> tuple[list[TrainProgress], list[float]]:
    import torch
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32), sft.lora_config(args))
    events: list[TrainProgress] = []
    times: list[float] = []

    def listener(event: TrainProgress) -> None:
        events.append(event)
        times.append(time.perf_counter())

    cuda = torch.cuda.is_available()
    training_args = TrainingArguments(
        output_dir=str(out),
        max_steps=args.max_steps or -1,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.learning_rate,
        seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=padded_dataset(tokenizer, rows, args.max_length),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100),
        callbacks=[ProgressCallback(listener)],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return events, times


def decode_rates(gguf: Path, adapter: Path, reps: int, max_tokens: int) -> tuple[float, float]:
    """Median decode tok/s of the base and of base + adapter, interleaved on one engine."""
    engine = LlamaEngine(gguf, n_ctx=1024)
    messages = [ChatMessage("user", DECODE_PROMPT)]
    rates: dict[bool, list[float]] = {False: [], True: []}
    engine.chat(messages, greedy(16)).text()  # warm-up
    for _ in range(reps):
        for with_adapter in (False, True):
            engine.set_adapter(adapter if with_adapter else None)
            reply = engine.chat(messages, greedy(max_tokens))
            reply.text()
            assert reply.stats.decode_tps is not None
            rates[with_adapter].append(reply.stats.decode_tps)
    return statistics.median(rates[False]), statistics.median(rates[True])


def training_parser(description: str, examples: int) -> argparse.ArgumentParser:
    """The options every training benchmark shares (the same defaults make their figures comparable)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--examples", type=int, default=examples)
    parser.add_argument("--hf-dir", type=Path, default=None, help="An already dequantised copy of the bundled model (skips ~20 s).")
    return parser


@contextmanager
def bench_home(hf_dir: Path | None) -> Iterator[tuple[Path, Settings, sqlite3.Connection, Any]]:
    """A throw-away data dir with its database and the bundled model prepared as training base."""
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as tmp:
        home = Path(tmp)
        conn = connect(home / "tunelab.db")
        try:
            yield home, Settings(home=home), conn, prepare_base(conn, home / "models", bundled_chat_model(), hf_dir)
        finally:
            conn.close()


def main() -> None:
    parser = training_parser(__doc__.splitlines()[0], examples=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    opts = parser.parse_args()

    with bench_home(opts.hf_dir) as (home, settings, conn, base):
        rows = rows_from_demo(opts.examples)
        args = SFTArgs(max_steps=opts.steps, batch_size=opts.batch_size, max_length=opts.max_length, lora_r=8, save_steps=10**6)
        print(f"{len(rows)} examples, {opts.steps} steps x batch {opts.batch_size}, max_length {opts.max_length}, device {sft.device()}")
        from transformers import AutoTokenizer

        share = padding_share(padded_dataset(AutoTokenizer.from_pretrained(base.hf_dir), rows, opts.max_length), opts.batch_size, args.seed)
        print(f"padding in the baseline's batches: {share:.0%} of token positions")

        started = time.perf_counter()
        ours, our_times, adapter = run_tunelab(settings, conn, base.hf_dir, rows, args)
        ours_wall = time.perf_counter() - started
        started = time.perf_counter()
        theirs, their_times = run_baseline(base.hf_dir, rows, args, home / "baseline")
        theirs_wall = time.perf_counter() - started

        ours_tps, theirs_tps = steady_rate(ours), steady_rate(theirs)
        print(
            f"tunelab SFT (packing, padding-free): {ours_tps:8.0f} tok/s  {step_seconds(our_times):6.2f} s/step  "
            f"loss {ours[0].loss:.3f} -> {ours[-1].loss:.3f}  ({ours_wall:.0f} s incl. load + export)"
        )
        print(
            f"padded HF Trainer baseline:          {theirs_tps:8.0f} tok/s  {step_seconds(their_times):6.2f} s/step  "
            f"loss {theirs[0].loss:.3f} -> {theirs[-1].loss:.3f}  ({theirs_wall:.0f} s incl. load)"
        )
        print(f"speed-up (non-padding tokens/s): {ours_tps / theirs_tps:.2f}x")

        base_tps, adapter_tps = decode_rates(base.gguf_path, adapter, opts.reps, opts.max_tokens)
        print(
            f"llama.cpp decode: base {base_tps:.1f} tok/s, with adapter {adapter_tps:.1f} tok/s "
            f"= {adapter_tps / base_tps:.0%} of base (target >= 90 %)"
        )


if __name__ == "__main__":
    main()
