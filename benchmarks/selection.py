"""Example selection at scale: p50/p95 latency of every selector, and embedding indexing vs raw encode.

Part 1, for generated banks of growing size (texts in topic families, so real near neighbours
exist), each stored as a real bank in SQLite and indexed into a real embedded Chroma: build
time and p50/p95 `select(query, k)` latency of random, jaccard (exact up to `EXACT_LIMIT`),
the MinHash LSH forest forced on (with its recall@k against exact), embedding and mmr (query
encoding + Chroma search). Targets at 100k: p95 <= 20 ms (jaccard), <= 30 ms (embedding).

Part 2, in the same run: indexing throughput of tunelab's embedding selector (SQLite pool ->
encoder -> Chroma) vs raw `SentenceTransformer.encode` of the same texts with the same model,
raw measured before and after tunelab so drift shows. Target: tunelab >= 80 % of raw.

Part 3, in the same run: the shared example store. The same bank indexed by tunelab's own
`BankIndex` into the embedded Chroma store and into a real `chroma run` server on loopback
(started by this script on a free port and stopped at the end), at 10k and 100k examples, side
by side with the ratio server/embedded. The texts are demo reviews spliced into distinct new
ones (seeded), encoded once for both modes, so three things are timed apart and printed with
what each includes: encoding texts/s (tunelab's encoder, shared by both modes), Chroma add
texts/s per mode (`BankIndex.sync` with the vectors ready: batched adds, over HTTP for the
server), and query p50/p95 per mode (`BankIndex.nearest`, k neighbours of an encoded query:
the Chroma part of a selection, without encoding the query).

    .venv/bin/python benchmarks/selection.py [--sizes 1000,10000,100000] [--queries 200] [--index-size 2000]
        [--store-sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' own `chroma run` helper
from server_support import chroma_run

if TYPE_CHECKING:
    from tunelab.config import Settings
    from tunelab.stores.banks import Bank, Example

T = TypeVar("T")


COMMON = ["the", "a", "of", "and", "is", "to", "in", "it", "this", "that"]


def generated(n: int, n_queries: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[str]]:
    """`n` distinct texts and queries from the same topics: 6 of a topic's 8 words + random words
    from a 5,000-word vocabulary + 2 of 10 common words (so, as in real text, a query shares a
    word with a fifth of the bank and an inverted index cannot skip most of it)."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(5000)]
    topics = [rng.sample(vocabulary, 8) for _ in range(max(1, n // 10))]

    def text(n_random: int) -> str:
        words = rng.sample(rng.choice(topics), 6) + rng.sample(vocabulary, n_random) + rng.sample(COMMON, 2)
        rng.shuffle(words)
        return " ".join(words)

    texts: dict[str, None] = {}
    while len(texts) < n:
        texts[text(4)] = None
    return [(t, "x") for t in texts], [text(3) for _ in range(n_queries)]


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
        from tunelab.icl.selectors import make_selector

        return make_selector(kind, bank, self.conn, self.settings, **kwargs)

    def warm_up(self) -> None:
        """Load the embedding model and Chroma once, so no build time below includes that."""
        self.selector("embedding", self.bank("warm-up", [(f"warm-up text {i}", "x") for i in range(64)]))


def latency_table(bench: Bench, sizes: list[int], n_queries: int, k: int, kinds: list[str]) -> None:
    """One row per (size, selector); "jaccard-lsh" is the MinHash forest forced on, with its recall."""
    from tunelab.icl.selectors.jaccard import EXACT_LIMIT, JaccardSelector
    from tunelab.stores.banks import BankStore

    print(f"{'examples':>9} {'selector':<12} {'build s':>8} {'p50 ms':>8} {'p95 ms':>8}  note")
    for n in sizes:
        pairs, queries = generated(n, n_queries)
        bank, create_s = timed(lambda: bench.bank(f"gen{n}", pairs))
        print(f"{n:>9} {'(import)':<12} {create_s:>8.2f}")
        pool = BankStore(bench.conn).examples(bank.name, "train")
        picks: dict[str, list[set[int]]] = {}
        for kind in kinds:
            if kind == "jaccard-lsh":
                selector, build_s = timed(lambda: JaccardSelector(pool, bank.name, exact_limit=0))
            else:
                selector, build_s = timed(lambda: bench.selector(kind, bank))
            times, found = [], []
            for query in queries:
                picked, seconds = timed(lambda: selector.select(query, k))
                times.append(seconds)
                found.append({p.id for p in picked})
            picks[kind] = found
            p50, p95 = percentiles(times)
            note = {
                "jaccard": "exact (sparse inverted index)" if n <= EXACT_LIMIT else "MinHash LSH forest (above EXACT_LIMIT)",
                "embedding": f"incl. query encoding; build = embed {n} texts into Chroma",
                "mmr": "reuses the embedding index; fetches 5k neighbours",
            }.get(kind, "")
            if kind == "jaccard-lsh" and "jaccard" in picks:
                recall = sum(len(a & b) for a, b in zip(picks["jaccard"], found)) / (k * len(queries))
                note = f"forced on; recall@{k} vs exact {recall:.3f}"
            print(f"{n:>9} {kind:<12} {build_s:>8.2f} {p50:>8.2f} {p95:>8.2f}  {note}")


def indexing_throughput(bench: Bench, size: int) -> None:
    from sentence_transformers import SentenceTransformer

    from tunelab.icl.embeddings import BATCH_SIZE, embedding_model_path, encoder
    from tunelab.stores import demo_banks

    reviews = [(row.input, row.output) for row in demo_banks.sentiment(size, seed=1).rows]
    texts = [text for text, _ in reviews]
    path = embedding_model_path(bench.settings)
    raw = SentenceTransformer(str(path), device=encoder(path).device, local_files_only=True)
    raw.encode(texts[:64], batch_size=BATCH_SIZE)  # tunelab's encoder was warmed up in main()

    def raw_run() -> float:
        return timed(lambda: raw.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True))[1]

    before = raw_run()
    bank = bench.bank("reviews", reviews)
    _, tunelab_s = timed(lambda: bench.selector("embedding", bank))
    after = raw_run()
    raw_rate = len(texts) / statistics.mean([before, after])
    print(f"\nindexing {len(texts)} demo reviews with {path}:")
    print(f"  raw SentenceTransformer.encode: {len(texts) / before:.0f} texts/s before, {len(texts) / after:.0f} after")
    print(
        f"  tunelab (SQLite pool -> encode -> Chroma add): {len(texts) / tunelab_s:.0f} texts/s "
        f"= {len(texts) / tunelab_s / raw_rate:.0%} of raw"
    )
    _, reopen_s = timed(lambda: bench.selector("embedding", bank))
    print(f"  reopening the indexed bank (nothing to embed): {reopen_s:.2f} s")


def spliced_reviews(n: int, seed: int = 0) -> list[str]:
    """`n` distinct texts, reproducibly: the first half of one demo review joined to the second half
    of another (13k reviews give far more than 100k such pairs), so lengths and words stay those of
    real reviews and none repeats."""
    from tunelab.stores import demo_banks

    reviews = [row.input.split() for row in demo_banks.sentiment(size=10**6, seed=seed).rows]
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    while len(texts) < n:
        head, tail = rng.sample(reviews, 2)
        texts[" ".join(head[: len(head) // 2] + tail[len(tail) // 2 :])] = None
    return list(texts)


@dataclass(frozen=True)
class StoreTimes:
    """One store mode at one bank size."""

    add_per_s: float
    """Texts per second through `BankIndex.sync` with the vectors ready: Chroma adds only."""
    p50_ms: float
    p95_ms: float
    """Latency of `BankIndex.nearest` for an encoded query (the Chroma search, not the encoding)."""


def encode_all(texts: list[str], settings: Settings) -> tuple[np.ndarray, float, str]:
    """Unit vectors of `texts` by tunelab's encoder, in chunks so 100k vectors are never Python lists
    all at once; returns (vectors, seconds, device)."""
    from tunelab.icl.embeddings import embedding_model_path, encoder

    model = encoder(embedding_model_path(settings))
    chunk = 4096
    started = time.perf_counter()
    vectors = np.concatenate([np.asarray(model.encode(texts[i : i + chunk]), dtype=np.float32) for i in range(0, len(texts), chunk)])
    return vectors, time.perf_counter() - started, model.device


def store_times(settings: Settings, bank: Bank, pool: list[Example], vectors: np.ndarray, queries: np.ndarray, k: int) -> StoreTimes:
    """Index `pool` (example i is row i of `vectors`) into the store `settings` names with tunelab's
    `BankIndex`, then time `k`-nearest queries against it."""
    from tunelab.icl.embeddings import embedding_model_path
    from tunelab.stores.chroma_index import BankIndex

    row = {example.input: i for i, example in enumerate(pool)}
    index = BankIndex(settings, bank, embedding_model_path(settings), lambda texts: vectors[[row[t] for t in texts]].tolist())
    added, add_s = timed(lambda: index.sync(pool))
    assert added == len(pool), f"{added} of {len(pool)} added: the store was not empty"
    query_lists = queries.tolist()
    index.nearest(query_lists[0], k)  # the first query loads the HNSW index into memory
    p50, p95 = percentiles([timed(lambda: index.nearest(q, k))[1] for q in query_lists])
    return StoreTimes(len(pool) / add_s, p50, p95)


def store_modes(bench: Bench, sizes: list[int], n_queries: int, k: int) -> None:
    """Embedded Chroma vs a `chroma run` server on loopback, the same banks and vectors in both."""
    import chromadb

    from tunelab.config import Settings
    from tunelab.stores.banks import BankStore

    texts = spliced_reviews(max(sizes) + n_queries)
    vectors, encode_s, device = encode_all(texts, bench.settings)
    queries = vectors[max(sizes) :]
    encode_rate = len(texts) / encode_s
    print(
        f"\nshared example store: {len(texts)} distinct texts spliced from demo reviews (seed 0), "
        f"k = {k}, {n_queries} queries, chromadb {chromadb.__version__}"
    )
    print(f"  encode = tunelab's encoder on {device}, batch 64, once for both modes: {encode_rate:.0f} texts/s")
    print("  add = BankIndex.sync with the vectors ready (batched Chroma adds; HTTP to the server)")
    print("  indexing = encode + add, derived from the two rates: 1 / (1/encode + 1/add)")
    print("  query = BankIndex.nearest of an encoded query (the Chroma search; encoding a query is extra)")
    print(f"{'examples':>9} {'mode':<16} {'add texts/s':>12} {'indexing t/s':>13} {'query p50 ms':>13} {'p95 ms':>8}")
    with chroma_run(bench.settings.home / "chroma-server") as url:
        modes = {"embedded": bench.settings, "server": Settings(home=bench.settings.home, chroma_url=url)}
        for n in sizes:
            bank = bench.bank(f"store{n}", [(t, "x") for t in texts[:n]])
            pool = BankStore(bench.conn).examples(bank.name, "train")
            rows = {t: i for i, t in enumerate(texts[:n])}
            pool_vectors = vectors[[rows[e.input] for e in pool]]
            times = {mode: store_times(settings, bank, pool, pool_vectors, queries, k) for mode, settings in modes.items()}
            for mode, t in times.items():
                indexing = 1 / (1 / encode_rate + 1 / t.add_per_s)
                print(f"{n:>9} {mode:<16} {t.add_per_s:>12.0f} {indexing:>13.0f} {t.p50_ms:>13.2f} {t.p95_ms:>8.2f}")
            server, embedded = times["server"], times["embedded"]
            print(
                f"{n:>9} {'server/embedded':<16} {server.add_per_s / embedded.add_per_s:>11.2f}x {'':>13} "
                f"{server.p50_ms / embedded.p50_ms:>12.2f}x {server.p95_ms / embedded.p95_ms:>7.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="bank sizes for the selector latency table ('' skips)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--selectors", default="random,jaccard,jaccard-lsh,embedding,mmr")
    parser.add_argument("--index-size", type=int, default=2000, help="demo reviews for the indexing comparison (0 skips)")
    parser.add_argument("--store-sizes", default="10000,100000", help="bank sizes for the embedded vs server comparison ('' skips)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    bench = Bench()
    print(f"{os.cpu_count()} CPUs, k = {args.k}, {args.queries} queries per size")
    bench.warm_up()
    if args.sizes:
        latency_table(bench, [int(s) for s in args.sizes.split(",")], args.queries, args.k, args.selectors.split(","))
    if args.index_size:
        indexing_throughput(bench, args.index_size)
    if args.store_sizes:
        store_modes(bench, [int(s) for s in args.store_sizes.split(",")], args.queries, args.k)


if __name__ == "__main__":
    main()
