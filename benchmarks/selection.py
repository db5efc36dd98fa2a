"""Example selection at scale: p50/p95 latency of every selector, and embedding indexing vs raw encode.

Part 1, for generated banks of growing size (texts in topic families, so real near neighbours
exist), each stored as a real bank in SQLite and indexed into a real embedded Chroma: build
time and p50/p95 `select(query, k)` latency of random, jaccard (exact inverted index up to
`EXACT_LIMIT`, MinHash LSH forest above, with its recall@k against exact), embedding and mmr
(query encoding + Chroma search). Targets at 100k: p95 <= 20 ms (jaccard), <= 30 ms (embedding).

Part 2, in the same run: indexing throughput of tunelab's embedding selector (SQLite pool ->
encoder -> Chroma) vs raw `SentenceTransformer.encode` of the same texts with the same model,
raw measured before and after tunelab so drift shows. Target: tunelab >= 80 % of raw.

    .venv/bin/python benchmarks/selection.py [--sizes 1000,10000,100000] [--queries 200] [--index-size 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def generated(n: int, n_queries: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[str]]:
    """`n` distinct texts (6 of a topic's 8 words + 4 random words) and queries from the same topics."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(5000)]
    topics = [rng.sample(vocabulary, 8) for _ in range(max(1, n // 10))]
    texts: dict[str, None] = {}
    while len(texts) < n:
        texts[" ".join(rng.sample(rng.choice(topics), 6) + rng.sample(vocabulary, 4))] = None
    queries = [" ".join(rng.sample(rng.choice(topics), 6) + rng.sample(vocabulary, 3)) for _ in range(n_queries)]
    return [(t, "x") for t in texts], queries


def timed(make: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = make()
    return value, time.perf_counter() - start


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    cuts = statistics.quantiles(seconds, n=20, method="inclusive")
    return 1000 * statistics.median(seconds), 1000 * cuts[18]


class Bench:
    """A temporary data dir with its SQLite store, shared by every size and selector."""

    def __init__(self) -> None:
        from tunelab.config import Settings
        from tunelab.stores.db import connect

        self.settings = Settings(home=Path(tempfile.mkdtemp(prefix="tunelab-bench-")))
        self.conn = connect(self.settings.db_path)

    def bank(self, name: str, pairs: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
        from tunelab.stores.bank_files import ExampleRow
        from tunelab.stores.banks import BankStore

        return BankStore(self.conn).create(name, [ExampleRow(i, o, 0) for i, o in pairs], test_size=0.0).bank

    def selector(self, kind: str, bank, **kwargs):  # type: ignore[no-untyped-def]
        from tunelab.engine.selectors import make_selector

        return make_selector(kind, bank, self.conn, self.settings, **kwargs)


def latency_table(bench: Bench, sizes: list[int], n_queries: int, k: int) -> None:
    from tunelab.engine.selectors.jaccard import EXACT_LIMIT, JaccardSelector
    from tunelab.stores.banks import BankStore

    print(f"{'examples':>9} {'selector':<16} {'build s':>8} {'p50 ms':>8} {'p95 ms':>8}  note")
    for n in sizes:
        pairs, queries = generated(n, n_queries)
        bank, create_s = timed(lambda: bench.bank(f"gen{n}", pairs))
        print(f"{n:>9} {'(bank import)':<16} {create_s:>8.2f}")
        for kind in ("random", "jaccard", "embedding", "mmr"):
            selector, build_s = timed(lambda: bench.selector(kind, bank))
            times, found = [], []
            for query in queries:
                picked, seconds = timed(lambda: selector.select(query, k))
                times.append(seconds)
                found.append({p.id for p in picked})
            p50, p95 = percentiles(times)
            note = ""
            if kind == "jaccard":
                if n > EXACT_LIMIT:
                    exact = JaccardSelector(BankStore(bench.conn).examples(bank.name, "train"), bank.name, exact_limit=n + 1)
                    exact_ids = [{p.id for p in exact.select(q, k)} for q in queries]
                    recall = sum(len(a & b) for a, b in zip(exact_ids, found)) / (k * len(queries))
                    note = f"MinHash LSH forest, recall@{k} vs exact {recall:.3f}"
                else:
                    note = "exact (inverted index)"
            elif kind in ("embedding", "mmr"):
                note = f"incl. query encoding; build = embed {n} texts into Chroma" if kind == "embedding" else "reuses the index"
            print(f"{n:>9} {kind:<16} {build_s:>8.2f} {p50:>8.2f} {p95:>8.2f}  {note}")


def indexing_throughput(bench: Bench, size: int) -> None:
    from sentence_transformers import SentenceTransformer

    from tunelab.engine.embeddings import BATCH_SIZE, embedding_model_path, encoder
    from tunelab.stores import demo_banks

    reviews = [(row.input, row.output) for row in demo_banks.sentiment(size, seed=1).rows]
    texts = [text for text, _ in reviews]
    path = embedding_model_path(bench.settings)
    raw = SentenceTransformer(str(path), device=encoder(path).device, local_files_only=True)
    raw.encode(texts[:64], batch_size=BATCH_SIZE)  # warm both models up before timing
    bench.selector("embedding", bench.bank("warm-up", reviews[:64]))

    def raw_run() -> float:
        return timed(lambda: raw.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True))[1]

    before = raw_run()
    bank = bench.bank("reviews", reviews)
    _, tunelab_s = timed(lambda: bench.selector("embedding", bank))
    after = raw_run()
    raw_rate = len(texts) / statistics.mean([before, after])
    print(f"\nindexing {len(texts)} demo reviews with {path.name}:")
    print(f"  raw SentenceTransformer.encode: {len(texts) / before:.0f} texts/s before, {len(texts) / after:.0f} after")
    print(f"  tunelab (SQLite pool -> encode -> Chroma add): {len(texts) / tunelab_s:.0f} texts/s "
          f"= {len(texts) / tunelab_s / raw_rate:.0%} of raw")
    _, reopen_s = timed(lambda: bench.selector("embedding", bank))
    print(f"  reopening the indexed bank (nothing to embed): {reopen_s:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--index-size", type=int, default=2000, help="demo reviews for the indexing comparison (0 skips)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    bench = Bench()
    print(f"{os.cpu_count()} CPUs, k = {args.k}, {args.queries} queries per size")
    latency_table(bench, [int(s) for s in args.sizes.split(",")], args.queries, args.k)
    if args.index_size:
        indexing_throughput(bench, args.index_size)


if __name__ == "__main__":
    main()
