"""Seconds per optimizer step of KTO and DPO relative to SFT, measured side by side in one run.

Issue 6's targets: DPO ≤ 2.5× SFT per step, KTO ≤ 1.6× SFT per step. All runs use the same base
(the bundled GGUF dequantised), the same LoRA (r, alpha, target modules), batch size, max length,
learning rate, seed and the same examples from the packaged `sentiment` demo bank:

- SFT: prompt → the correct label, trl `SFTTrainer` through `sft.train`, **unpacked** so a step
  sees the same number of examples as the preference trainers (packed SFT is also timed: it fits
  several examples into each row, so its step does more work and its s/step is not comparable);
- KTO: the same prompts, half with the correct label (👍) and half with the wrong one (👎);
- DPO: the same prompts, chosen = correct label, rejected = wrong label.

The step time is the median gap between consecutive progress events after the first step
(warm-up). KTO and DPO compute the reference log-probabilities in one pass before training
when the run covers every example at least once (`preference_args.reference_settings`; the
defaults, 8 steps x 4 of 32 examples, are one epoch), so each run's wall time is printed too.
SFT runs first and again last, so drift in the machine's load shows up as a gap between the
two SFT figures; the ratios use their mean.

    .venv/bin/python benchmarks/feedback_step_time.py [--steps 8] [--batch-size 4] [--max-length 128]
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from train_throughput import bench_home, step_seconds, training_parser

from tunelab.config import Settings
from tunelab.finetune import feedback_train
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.methods import sft
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.finetune.progress import TrainProgress
from tunelab.finetune.progress_callback import ProgressCallback
from tunelab.stores import demo_banks

TARGETS = {"kto": 1.6, "dpo": 2.5}


def shared_args(steps: int, batch_size: int, max_length: int) -> dict[str, Any]:
    """The settings SFT, KTO and DPO share when their step times are set side by side."""
    return dict(
        max_steps=steps,
        batch_size=batch_size,
        max_length=max_length,
        seed=0,
        learning_rate=5e-5,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        save_steps=10**6,
    )


def labelled_prompts(size: int) -> list[tuple[list[dict[str, str]], str, str]]:
    """(prompt messages, correct label, wrong label) from the demo bank."""
    bank = demo_banks.sentiment(size=size, max_chars=300)
    labels = sorted({r.output for r in bank.rows})
    return [(sft.prompt_messages(bank.instruction, r.input), r.output, next(x for x in labels if x != r.output)) for r in bank.rows]


def answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


class StepClock:
    """A progress listener that keeps the wall-clock time of every optimizer step."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.times: list[float] = []
        self.events: list[TrainProgress] = []

    def __call__(self, event: TrainProgress) -> None:
        self.events.append(event)
        self.times.append(time.perf_counter())


def time_sft(settings: Settings, conn: Any, hf_dir: Path, prompts: list[Any], args: SFTArgs, name: str) -> StepClock:
    rows = [{"prompt": p, "completion": answer(good)} for p, good, _ in prompts]
    clock = StepClock()
    plan = sft.plan_for(settings, conn, name, "sentiment", list(range(len(rows))), rows, args, hf_dir=hf_dir)
    sft.train(plan, clock)
    return clock


def time_preference(method: str, hf_dir: Path, prompts: list[Any], args: PreferenceArgs, out: Path) -> StepClock:
    if method == "kto":
        rows = [
            {"prompt": p, "completion": answer(good if i % 2 == 0 else bad), "label": i % 2 == 0}
            for i, (p, good, bad) in enumerate(prompts)
        ]
    else:
        rows = [{"prompt": p, "chosen": answer(good), "rejected": answer(bad)} for p, good, bad in prompts]
    clock = StepClock()
    feedback_train.fit(method, rows, hf_dir, args, out, callbacks=[ProgressCallback(clock)])
    return clock


def main() -> None:
    opts = training_parser(__doc__.splitlines()[0], examples=32).parse_args()

    with bench_home(opts.hf_dir) as (home, settings, conn, base):
        prompts = labelled_prompts(opts.examples)
        common = shared_args(opts.steps, opts.batch_size, opts.max_length)
        sft_args = SFTArgs(packing=False, **common)
        pref_args = PreferenceArgs(**common)
        print(f"{len(prompts)} prompts, {opts.steps} steps x batch {opts.batch_size}, max_length {opts.max_length}, device {sft.device()}")

        clocks = {
            "sft": time_sft(settings, conn, base.hf_dir, prompts, sft_args, "bench-sft-1"),
            "kto": time_preference("kto", base.hf_dir, prompts, pref_args, home / "kto"),
            "dpo": time_preference("dpo", base.hf_dir, prompts, pref_args, home / "dpo"),
            "sft again": time_sft(settings, conn, base.hf_dir, prompts, sft_args, "bench-sft-2"),
            "sft packed": time_sft(settings, conn, base.hf_dir, prompts, replace(sft_args, packing=True), "bench-sft-packed"),
        }
        seconds = {name: step_seconds(clock.times) for name, clock in clocks.items()}
        sft_step = statistics.mean([seconds["sft"], seconds["sft again"]])
        for name, clock in clocks.items():
            events = clock.events
            print(
                f"{name:<11} {seconds[name]:6.2f} s/step  ({seconds[name] / sft_step:4.2f}x SFT)  "
                f"loss {events[0].loss:.3f} -> {events[-1].loss:.3f}  "
                f"wall {clock.times[-1] - clock.started:5.1f} s (model load, reference pass, all steps)"
            )
        for method, target in TARGETS.items():
            ratio = seconds[method] / sft_step
            print(f"{method.upper()} / SFT per step: {ratio:.2f}x (target <= {target}x: {'met' if ratio <= target else 'NOT met'})")


if __name__ == "__main__":
    main()
