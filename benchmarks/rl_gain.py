"""Mean reward of sampled replies before and after a short GRPO (or RLOO) run, over several seeds.

The test suite shows one seed (tests/test_rl.py); this shows whether the gain survives another
seed. Per seed, in a fresh data dir: the constructed helpful-vs-rude ratings of the test suite
(tests/feedback_support.py, 👍 a helpful answer, 👎 a rude refusal to "What is i plus i+3?"), a
reward model trained on them, then the policy run with the same settings as the test. The mean
reward is measured by `rl.mean_reward` on the run's first prompts with seeded samples, before and
after, exactly as the run records it. The figures are rewards, not timings, so a loaded machine
changes the wall time only.

    .venv/bin/python benchmarks/rl_gain.py [--seeds 0,1,2] [--method grpo] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the constructed ratings, not a copy

from feedback_support import rate_helpful_vs_rude

from tunelab.config import Settings
from tunelab.finetune import feedback_runs
from tunelab.finetune.base_weights import prepare_base
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.stores.db import connect
from tunelab.stores.model_files import bundled_chat_model

PROMPTS = 12
"""Rated prompts, as in the test: the run trains on all of them and measures on the first eight."""


def policy_args(opts: argparse.Namespace, seed: int) -> PreferenceArgs:
    """The test's GRPO settings (tests/test_rl.py), `--steps` and `--lr` aside."""
    return PreferenceArgs(
        max_steps=opts.steps, learning_rate=opts.lr, batch_size=4, num_generations=4, max_completion_length=24, beta=0.01, seed=seed
    )


def one_seed(opts: argparse.Namespace, seed: int, base_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tunelab-rl-") as tmp:
        settings = Settings(home=Path(tmp))
        conn = connect(settings.db_path)
        try:
            rate_helpful_vs_rude(conn, PROMPTS)
            started = time.perf_counter()
            reward = feedback_runs.prepare(
                settings, conn, "reward", PreferenceArgs(max_steps=12, learning_rate=1e-3, seed=seed), hf_dir=base_dir
            )
            accuracy = feedback_runs.train(reward).metrics["held_out_accuracy"]
            plan = feedback_runs.prepare(settings, conn, opts.method, policy_args(opts, seed), "policy", hf_dir=base_dir)
            metrics = feedback_runs.train(plan).metrics
        finally:
            conn.close()
    before, after = metrics["mean_reward_before"], metrics["mean_reward_after"]
    return {
        "seed": seed,
        "held_out_accuracy": accuracy,
        "before": before,
        "after": after,
        "gain": after - before,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run each")
    parser.add_argument("--method", default="grpo", choices=("grpo", "rloo"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1, as the test: the result depends on it)")
    opts = parser.parse_args()
    seeds = [int(s) for s in opts.seeds.split(",")]
    import torch

    torch.set_num_threads(opts.threads)

    with tempfile.TemporaryDirectory(prefix="tunelab-rl-base-") as tmp:
        conn = connect(Path(tmp) / "base.db")
        base = prepare_base(conn, Path(tmp) / "models", bundled_chat_model())
        conn.close()
        print(
            f"{opts.method}, {opts.steps} steps at lr {opts.lr}, seeds {seeds}, {opts.threads} torch thread(s); "
            f"reward model: 12 steps on {PROMPTS} rated pairs"
        )
        results = []
        for seed in seeds:
            result = one_seed(opts, seed, base.hf_dir)
            results.append(result)
            print(
                f"seed {seed}: reward model held-out accuracy {result['held_out_accuracy']:.2f}; mean reward "
                f"{result['before']:+.3f} -> {result['after']:+.3f} (gain {result['gain']:+.3f}), {result['seconds']:.0f} s",
                flush=True,
            )
    gains = [r["gain"] for r in results]
    spread = f", sd {statistics.stdev(gains):.3f}" if len(gains) > 1 else ""
    print(
        f"gain over {len(gains)} seed(s): mean {statistics.mean(gains):+.3f}{spread}, min {min(gains):+.3f}, "
        f"max {max(gains):+.3f}; raised in {sum(g > 0 for g in gains)} of {len(gains)}"
    )


if __name__ == "__main__":
    main()
