"""Example selectors: for a query, the k most useful examples of a bank's train split, with scores.

Every selector draws only from the train split, so a test item can never be shown as an
example. Kinds: `random` (seeded baseline), `jaccard` (word overlap), `embedding`
(sentence-transformers vectors in Chroma), `mmr` (embedding relevance with diversity).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.stores.banks import Bank, BankStore, Example

KINDS = ("random", "jaccard", "embedding", "mmr")
IndexProgress = Callable[[int, int], None]
"""Called with (done, total) while a selector indexes the pool."""


@dataclass(frozen=True)
class Selected:
    id: int
    input: str
    output: str
    score: float
    """Higher is more relevant: Jaccard overlap, cosine similarity, or 0 for random picks."""


class Selector(Protocol):
    kind: str

    def select(self, query: str, k: int) -> list[Selected]:
        """The k best examples for `query`, best first."""
        ...


def check_positive_k(k: int) -> int:
    if k < 1:
        raise TunelabError(f"k must be at least 1 (got {k}); use no selector for zero-shot")
    return k


def check_k(k: int, pool: list[Example], bank: str) -> int:
    check_positive_k(k)
    if k > len(pool):
        raise TunelabError(f"k = {k} is larger than bank {bank!r}'s train split ({len(pool)} examples)")
    return k


def selected(example: Example, score: float) -> Selected:
    return Selected(example.id, example.input, example.output, score)


def make_selector(
    kind: str, bank: Bank, conn: sqlite3.Connection, settings: Settings, seed: int = 0, progress: IndexProgress | None = None
) -> Selector:
    """A selector over `bank`'s train split (embedding kinds index what changed first)."""
    pool = BankStore(conn).examples(bank.name, split="train")
    if not pool:
        raise TunelabError(f"bank {bank.name!r} has no train examples to select from")
    if kind == "random":
        from tunelab.icl.selectors.random_pick import RandomSelector

        return RandomSelector(pool, bank.name, seed)
    if kind == "jaccard":
        from tunelab.icl.selectors.jaccard import JaccardSelector

        return JaccardSelector(pool, bank.name)
    if kind in ("embedding", "mmr"):
        from tunelab.icl.selectors.embedding import EmbeddingSelector

        return EmbeddingSelector(pool, bank, settings, diverse=kind == "mmr", progress=progress)
    raise TunelabError(f"unknown selector {kind!r} (one of: {', '.join(KINDS)})")


class WithoutExample:
    """A selector that never picks example `example_id`, nor any example with the same input.

    Context distillation relabels a bank's own train inputs with ICL over that same bank: the item
    being answered must not be shown its own answer as an example."""

    def __init__(self, inner: Selector, example_id: int, text: str, pool_size: int) -> None:
        """`pool_size`: the bank's train split size (selectors refuse a k above it)."""
        self.inner = inner
        self.kind = inner.kind
        self.example_id = example_id
        self.input = text
        self.pool_size = pool_size

    def select(self, query: str, k: int) -> list[Selected]:
        extra = 1
        while True:
            want = min(k + extra, self.pool_size)
            picked = self.inner.select(query, want)
            kept = [s for s in picked if s.id != self.example_id and s.input != self.input]
            if len(kept) >= k or want == self.pool_size:
                return kept[:k]
            extra *= 2
