"""What tunelab's default with adapters on llama-server costs: every prompt evaluated in full
(`cache_prompt: false`) against reuse of the slot's cached prefix (`engine_prompt_cache` on a
server started with `--cache-ram 0`), side by side on one server.

The prompts are a compare arm's: zero-shot and dynamic k=4 (Jaccard) ICL on held-out reviews of
the demo sentiment bank, asked one after another on one slot (a warm slot holds the previous
item's prompt, so the system prompt and instruction are reused; dynamic examples mostly are not).
The modes alternate per query so drift hits both. The server's own `timings` give the tokens
evaluated and the prompt time; medians are printed.

    .venv/bin/python benchmarks/llama_server_cache.py [--queries 20] [--k 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from icl_ttft import sentiment_queries
from llama_cpp_source import llama_server
from server_support import llama_server_process

from tunelab.engine.llama_engine import LlamaEngine
from tunelab.icl.prompt import build_icl_messages
from tunelab.stores.model_files import bundled_chat_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    bank, queries, jaccard = sentiment_queries(args.queries)
    model = bundled_chat_model()
    assert model is not None
    engine = LlamaEngine(model, n_ctx=2048, n_threads=args.threads)  # only to build the prompts as compare does
    kinds = {"zero-shot": 0, f"dynamic k={args.k}": args.k}
    prompts = {
        name: [[m.as_dict() for m in build_icl_messages(engine, bank, jaccard.select(q, k) if k else [], q, 1).messages] for q in queries]
        for name, k in kinds.items()
    }
    engine.close()

    results: dict[tuple[str, bool], list[tuple[int, float]]] = {}
    with llama_server_process(llama_server(), model, [], slots=2, cache_ram=False, n_threads=args.threads) as url:
        client = httpx.Client(base_url=url, timeout=120)

        def ask(messages: list[dict[str, str]], slot: int, cache: bool) -> tuple[int, float]:
            body = {"messages": messages, "max_tokens": 1, "temperature": 0, "id_slot": slot, "cache_prompt": cache}
            timings = client.post("/v1/chat/completions", json=body).json()["timings"]
            return int(timings["prompt_n"]), float(timings["prompt_ms"])

        for name, messages in prompts.items():
            ask(messages[0], 0, False)  # warm-up: page the weights in
            ask(messages[0], 1, True)
            for prompt in messages:  # slot 0 never reuses, slot 1 always may: one query each, in turn
                results.setdefault((name, False), []).append(ask(prompt, 0, False))
                results.setdefault((name, True), []).append(ask(prompt, 1, True))
    print(f"llama-server, {model.name}, {len(queries)} held-out reviews, {args.threads} threads, one slot per mode")
    print("| prompt | cache_prompt | tokens evaluated | prompt eval ms (median) | vs reuse |")
    print("|---|---|---|---|---|")
    for name in prompts:
        reuse = statistics.median(ms for _, ms in results[(name, True)])
        for cache in (False, True):
            runs = results[(name, cache)]
            median = statistics.median(ms for _, ms in runs)
            label = "true (engine_prompt_cache)" if cache else "false (default with adapters)"
            print(f"| {name} | {label} | {statistics.mean(n for n, _ in runs):.0f} | {median:.1f} | {median / reuse:.2f}x |")


if __name__ == "__main__":
    main()
