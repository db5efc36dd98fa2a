"""Jaccard selection at scale: exact (inverted index) vs MinHash LSH forest, side by side.

For generated banks of growing size (texts in families, so real near neighbours exist) this
prints, per size: build time, mean query time of both, and the LSH recall@k against exact.
Also the embedding selector's indexing rate on the packaged demo bank (examples/s into Chroma).

    .venv/bin/python benchmarks/selector_recall.py [--sizes 5000,20000,50000] [--queries 100] [--k 4]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from tunelab.engine.selectors.jaccard import JaccardSelector
from tunelab.stores.banks import Example


def generated(n: int, seed: int = 0) -> tuple[list[Example], list[str]]:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(5000)]
    topics = [rng.sample(vocabulary, 8) for _ in range(max(1, n // 10))]
    texts = [" ".join(rng.sample(rng.choice(topics), 6) + rng.sample(vocabulary, 4)) for _ in range(n)]
    queries = [" ".join(rng.sample(rng.choice(topics), 6) + rng.sample(vocabulary, 3)) for _ in range(1000)]
    return [Example(i + 1, t, "x", "train") for i, t in enumerate(texts)], queries


def timed(make):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = make()
    return value, time.perf_counter() - start


def jaccard_table(sizes: list[int], n_queries: int, k: int) -> None:
    print(f"{'examples':>9} {'exact build s':>14} {'LSH build s':>12} {'exact ms/q':>11} {'LSH ms/q':>9} {'LSH speed-up':>13} {'recall@k':>9}")
    for n in sizes:
        pool, queries = generated(n)
        queries = queries[:n_queries]
        exact, exact_build = timed(lambda: JaccardSelector(pool, "gen", exact_limit=n + 1))
        lsh, lsh_build = timed(lambda: JaccardSelector(pool, "gen", exact_limit=0))
        truth, exact_s = timed(lambda: [{p.id for p in exact.select(q, k)} for q in queries])
        found, lsh_s = timed(lambda: [{p.id for p in lsh.select(q, k)} for q in queries])
        recall = sum(len(t & f) for t, f in zip(truth, found)) / (k * len(queries))
        print(f"{n:>9} {exact_build:>14.2f} {lsh_build:>12.2f} {1000 * exact_s / len(queries):>11.2f} "
              f"{1000 * lsh_s / len(queries):>9.2f} {exact_s / lsh_s:>12.2f}x {recall:>9.3f}")


def embedding_indexing(size: int) -> None:
    from tunelab.config import Settings
    from tunelab.engine.selectors import make_selector
    from tunelab.stores import demo_banks
    from tunelab.stores.banks import BankStore
    from tunelab.stores.db import connect

    settings = Settings(home=Path(tempfile.mkdtemp(prefix="tunelab-bench-")))
    conn = connect(settings.db_path)
    demo = demo_banks.sentiment(size)
    bank = BankStore(conn).create("sentiment", demo.rows, demo.instruction, test_size=0.0).bank
    make_selector("embedding", BankStore(conn).create("warm", demo.rows[:8], test_size=0.0).bank, conn, settings)  # load the model
    selector, seconds = timed(lambda: make_selector("embedding", bank, conn, settings))
    again, reuse = timed(lambda: make_selector("embedding", bank, conn, settings))
    _, query_s = timed(lambda: [selector.select(r.input, 4) for r in demo.rows[:50]])
    print(f"\nembedding index, {bank.n_train} demo reviews: {seconds:.1f} s ({bank.n_train / seconds:.0f} examples/s); "
          f"reopening (nothing to embed): {reuse:.2f} s; query {1000 * query_s / 50:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000,50000")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--embedding-size", type=int, default=1000, help="demo reviews to embed (0 skips)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    jaccard_table([int(s) for s in args.sizes.split(",")], args.queries, args.k)
    if args.embedding_size:
        embedding_indexing(args.embedding_size)


if __name__ == "__main__":
    main()
