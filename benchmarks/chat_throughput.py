"""Raw llama-cpp-python streaming vs tunelab's engine vs the headless CLI, side by side in one run.

Same model, prompt and greedy sampler; the KV cache is cleared before every measured reply so
TTFT includes the prompt evaluation in both paths. Prints medians and the ratios against the
raw baseline (targets: decode tok/s >= 97 % of raw, TTFT within +20 ms).

    .venv/bin/python benchmarks/chat_throughput.py [--reps 5] [--max-tokens 128] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from llama_cpp import Llama

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.llama_engine import LlamaEngine
from tunelab.engine.sampling import SamplerParams
from tunelab.stores.model_files import bundled_chat_model

PROMPT = "Explain, step by step, how a bicycle works, in detail."


def raw_run(llama: Llama, max_tokens: int) -> tuple[float, float]:
    """(ttft_ms, decode tok/s) of llama-cpp-python's own streaming chat completion."""
    llama.reset()
    start = time.perf_counter()
    first = last = None
    n = 0
    for chunk in llama.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}],
        temperature=0,
        repeat_penalty=1.0,
        max_tokens=max_tokens,
        stream=True,
    ):
        if chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            first = first or last
            n += 1
    assert first is not None and last is not None
    return (first - start) * 1000, (n - 1) / (last - first)


def engine_run(engine: LlamaEngine, max_tokens: int) -> tuple[float, float]:
    engine.llama.reset()
    reply = engine.chat([ChatMessage("user", PROMPT)], SamplerParams(temperature=0, repeat_penalty=1.0, max_tokens=max_tokens))
    reply.text()
    assert reply.stats.ttft_ms is not None and reply.stats.decode_tps is not None
    return reply.stats.ttft_ms, reply.stats.decode_tps


def cli_run(model: str, max_tokens: int, home: str) -> tuple[float, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunelab.cli",
            "chat",
            "--json",
            "--model",
            model,
            "--temperature",
            "0",
            "--repeat-penalty",
            "1.0",
            "--max-tokens",
            str(max_tokens),
            PROMPT,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TUNELAB_HOME": home},
    )
    stats = json.loads(out.stdout)["stats"]
    return stats["ttft_ms"], stats["decode_tps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default=str(bundled_chat_model()))
    args = parser.parse_args()

    engine = LlamaEngine(args.model, n_ctx=2048)
    raw = engine.llama  # the same loaded weights and context for both in-process paths
    results: dict[str, list[tuple[float, float]]] = {"raw llama-cpp-python": [], "tunelab engine": [], "tunelab chat (CLI)": []}
    engine_run(engine, 8)  # warm-up
    raw_run(raw, 8)
    with tempfile.TemporaryDirectory() as home:
        for _ in range(args.reps):  # interleaved so drift hits every path alike
            results["raw llama-cpp-python"].append(raw_run(raw, args.max_tokens))
            results["tunelab engine"].append(engine_run(engine, args.max_tokens))
            results["tunelab chat (CLI)"].append(cli_run(args.model, args.max_tokens, home))

    base_ttft = statistics.median(t for t, _ in results["raw llama-cpp-python"])
    base_tps = statistics.median(s for _, s in results["raw llama-cpp-python"])
    print(f"model {os.path.basename(args.model)}, {args.max_tokens} tokens, {args.reps} reps, {os.cpu_count()} CPUs")
    print(f"{'path':<22} {'TTFT ms':>9} {'Δ TTFT':>8} {'tok/s':>8} {'ratio':>7}")
    for name, runs in results.items():
        ttft = statistics.median(t for t, _ in runs)
        tps = statistics.median(s for _, s in runs)
        print(f"{name:<22} {ttft:>9.1f} {ttft - base_ttft:>+8.1f} {tps:>8.1f} {tps / base_tps:>7.1%}")


if __name__ == "__main__":
    main()
