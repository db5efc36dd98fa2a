"""Time to first token: zero-shot vs k=4 ICL prompts on the bundled model, cold and warm.

Four prompt kinds for the same held-out reviews of the demo sentiment bank:
- zero-shot: system prompt (with the bank's instruction) + the review;
- static k=4: the same 4 examples for every query (classic fixed few-shot);
- dynamic k=4: the 4 Jaccard-nearest examples for each query (what tunelab does);
- dynamic k=4 cached: the same prompts, the examples' KV from the engine's example cache
  (`LlamaEngine.chat_cached`, `--recompute` tokens of each decoded again; issue 27's target:
  warm <= 1.5x zero-shot).
Cold = the KV cache cleared before each query (for the cached kind: the example cache emptied).
Warm = consecutive queries of one kind on the same loaded model, so llama.cpp reuses the longest
common token prefix with the previous prompt (cached kind: the examples were computed before).
For each kind it prints prompt tokens, tokens actually evaluated (prompt minus reused prefix;
cached kind: prompt minus restored example tokens) and median TTFT, with the ratio to zero-shot.

    .venv/bin/python benchmarks/icl_ttft.py [--queries 20] [--reps 3] [--k 4] [--recompute 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from tunelab.config import Settings
from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.llama_engine import LlamaEngine
from tunelab.engine.sampling import SamplerParams
from tunelab.icl.prompt import build_icl_messages
from tunelab.icl.selectors import Selected, Selector, make_selector
from tunelab.stores import demo_banks
from tunelab.stores.banks import Bank, BankStore
from tunelab.stores.db import connect
from tunelab.stores.model_files import bundled_chat_model

GREEDY_ONE_TOKEN = SamplerParams(temperature=0, max_tokens=1)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b[:-1]):  # llama-cpp-python always re-evaluates the prompt's last token
        if x != y:
            break
        n += 1
    return n


def ttft(engine: LlamaEngine, messages: list[ChatMessage], cold: bool, previous: list[int]) -> tuple[float, int, list[int]]:
    """(TTFT ms, tokens evaluated, prompt tokens) of one greedy one-token reply."""
    tokens = engine.template.tokens(messages)
    if cold:
        engine.llama.reset()
    reused = 0 if cold else common_prefix(previous, tokens)
    reply = engine.chat(messages, GREEDY_ONE_TOKEN)
    reply.text()
    assert reply.stats.ttft_ms is not None
    return reply.stats.ttft_ms, len(tokens) - reused, tokens


def cached_ttft(engine: LlamaEngine, messages: list[ChatMessage], n_examples: int, cold: bool, recompute: int) -> tuple[float, int, int]:
    """(TTFT ms, tokens evaluated, prompt tokens) of one greedy one-token reply from the example cache."""
    if cold:
        engine.example_cache.clear()
    reply, use = engine.chat_cached(messages, n_examples, recompute, GREEDY_ONE_TOKEN)
    reply.text()
    assert reply.stats.ttft_ms is not None and use.cached
    return reply.stats.ttft_ms, reply.stats.prompt_tokens - use.cached_tokens, reply.stats.prompt_tokens


def sentiment_queries(n: int) -> tuple[Bank, list[str], Selector]:
    """The demo sentiment bank (400 reviews) in a fresh data dir, its first `n` held-out reviews
    and a Jaccard selector over its train split: the ICL prompts the TTFT benchmarks time."""
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="tunelab-bench-")))
    conn = connect(settings.db_path)
    demo = demo_banks.sentiment(400)
    bank = BankStore(conn).create("sentiment", demo.rows, demo.instruction).bank
    queries = [e.input for e in BankStore(conn).examples(bank.name, "test")[:n]]
    return bank, queries, make_selector("jaccard", bank, conn, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--recompute", type=int, default=Settings().icl_cache_recompute, help="tokens per cached example recomputed")
    parser.add_argument("--model", default=str(bundled_chat_model()))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    bank, queries, jaccard = sentiment_queries(args.queries)
    static = jaccard.select(queries[0], args.k)
    engine = LlamaEngine(Path(args.model), n_ctx=2048)

    dynamic = f"dynamic k={args.k} (jaccard)"
    kinds: dict[str, Callable[[str], list[Selected]]] = {
        "zero-shot": lambda q: [],
        f"static k={args.k}": lambda q: static,
        dynamic: lambda q: jaccard.select(q, args.k),
    }
    built = {name: [build_icl_messages(engine, bank, pick(q), q, 1) for q in queries] for name, pick in kinds.items()}
    prompts = {name: [b.messages for b in group] for name, group in built.items()}
    cached = f"dynamic k={args.k} cached R={args.recompute}"
    results: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    ttft(engine, prompts["zero-shot"][0], True, [])  # warm-up: page the weights in
    for _ in range(args.reps):  # kinds interleaved per repetition so drift hits all alike
        for name, messages in prompts.items():
            for mode in ("cold", "warm"):
                engine.llama.reset()
                ttft(engine, messages[-1], True, [])  # warm: the cache holds a prompt of this kind
                previous = engine.template.tokens(messages[-1])
                for prompt in messages:
                    ms, evaluated, previous = ttft(engine, prompt, mode == "cold", previous)
                    results.setdefault((name, mode), []).append((ms, evaluated, len(previous)))
        for mode in ("cold", "warm"):
            engine.example_cache.clear()
            if mode == "warm":  # every example computed once before the timed queries
                for b in built[dynamic]:
                    engine.chat_cached(b.messages, len(b.used), args.recompute, GREEDY_ONE_TOKEN)[0].text()
            for b in built[dynamic]:
                results.setdefault((cached, mode), []).append(cached_ttft(engine, b.messages, len(b.used), mode == "cold", args.recompute))

    print(f"{Path(args.model).name}, {len(queries)} held-out reviews x {args.reps} reps, {os.cpu_count()} CPUs")
    print(f"{'prompt':<24} {'mode':<5} {'prompt tok':>10} {'evaluated':>9} {'TTFT ms':>8} {'vs zero-shot':>12}")
    for mode in ("cold", "warm"):
        base = statistics.median(ms for ms, _, _ in results[("zero-shot", mode)])
        for name in [*prompts, cached]:
            runs = results[(name, mode)]
            median = statistics.median(ms for ms, _, _ in runs)
            print(
                f"{name:<24} {mode:<5} {statistics.mean(p for _, _, p in runs):>10.0f} "
                f"{statistics.mean(e for _, e, _ in runs):>9.0f} {median:>8.1f} {median / base:>11.2f}x"
            )


if __name__ == "__main__":
    main()
