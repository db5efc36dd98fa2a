"""Jaccard selector: the examples whose word sets overlap the query's most.

Up to `EXACT_LIMIT` examples the score of every example is computed exactly: the pool is a
sparse example × token matrix, and a query sums the columns of its tokens (an inverted index
walked in C by scipy), so examples sharing only common words cost no Python loop. Above the
limit a MinHash LSH forest (datasketch) proposes candidates that are then scored exactly; its
recall against the exact ranking is measured in tests and in `benchmarks/selection.py`.
Ties are broken by example id, so a selection is deterministic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from tunelab.icl.selectors import Selected, check_k, selected
from tunelab.icl.selectors.tokens import jaccard, tokenize
from tunelab.stores.banks import Example

if TYPE_CHECKING:
    from datasketch import MinHash, MinHashLSHForest

EXACT_LIMIT = 1_000_000
"""Measured (docs/benchmarks.md): the exact scorer answers in under 20 ms (p95) up to here on 2 CPU cores."""
NUM_PERM = 128
CANDIDATES_PER_K = 20
"""How many LSH candidates to re-score exactly per requested example."""


class JaccardSelector:
    kind = "jaccard"

    def __init__(self, pool: list[Example], bank: str, exact_limit: int = EXACT_LIMIT) -> None:
        self.pool = pool
        self.bank = bank
        self.tokens = [tokenize(e.input) for e in pool]
        self.ids = np.array([e.id for e in pool], dtype=np.int64)
        self.by_id = np.argsort(self.ids, kind="stable")
        self.columns: dict[str, int] = {}
        rows, cols = [], []
        for position, tokens in enumerate(self.tokens):
            for token in tokens:
                rows.append(position)
                cols.append(self.columns.setdefault(token, len(self.columns)))
        self.matrix = sparse.csc_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(pool), len(self.columns)))
        self.sizes = np.array([len(t) for t in self.tokens], dtype=np.int64)
        self.forest = _build_forest(self.tokens) if len(pool) > exact_limit else None

    @property
    def approximate(self) -> bool:
        return self.forest is not None

    def select(self, query: str, k: int) -> list[Selected]:
        check_k(k, self.pool, self.bank)
        wanted = tokenize(query)
        chosen = self._forest_best(wanted, k) if self.forest is not None else self._exact_best(wanted, k)
        return [selected(self.pool[p], jaccard(wanted, self.tokens[p])) for p in chosen]

    def _exact_best(self, wanted: frozenset[str], k: int) -> list[int]:
        """Positions of the k best examples by exact Jaccard, ties (and zero overlap) by id."""
        known = [self.columns[t] for t in wanted if t in self.columns]
        shared = np.asarray(self.matrix[:, known].sum(axis=1)).ravel() if known else np.zeros(len(self.pool), dtype=np.int64)
        overlapping = np.flatnonzero(shared)
        scores = shared[overlapping] / (self.sizes[overlapping] + len(wanted) - shared[overlapping])
        if len(overlapping) > k:  # keep the k best and everything tied with the k-th (selecting on -scores: fast with ties)
            keep = scores >= -np.partition(-scores, k - 1)[k - 1]
            overlapping, scores = overlapping[keep], scores[keep]
        best = [int(p) for p in overlapping[np.lexsort((self.ids[overlapping], -scores))][:k]]
        return best + self._first_by_id(k - len(best), set(best))

    def _first_by_id(self, n: int, taken: set[int]) -> list[int]:
        """`n` more examples when fewer than k overlap the query: the lowest ids not taken."""
        return [int(p) for p in self.by_id[: n + len(taken)] if p not in taken][:n] if n > 0 else []

    def _forest_best(self, wanted: frozenset[str], k: int) -> list[int]:
        assert self.forest is not None
        candidates = {int(key) for key in self.forest.query(_minhash(wanted), k * CANDIDATES_PER_K)}
        scored = sorted(((jaccard(wanted, self.tokens[p]), p) for p in candidates), key=lambda sp: (-sp[0], self.pool[sp[1]].id))
        chosen = [p for _, p in scored[:k]]
        return chosen + self._first_by_id(k - len(chosen), set(chosen))


def _minhash(tokens: frozenset[str]) -> MinHash:
    from datasketch import MinHash

    sketch = MinHash(num_perm=NUM_PERM)
    sketch.update_batch([t.encode("utf-8") for t in tokens])
    return sketch


def _build_forest(token_sets: list[frozenset[str]]) -> MinHashLSHForest:
    from datasketch import MinHashLSHForest

    forest = MinHashLSHForest(num_perm=NUM_PERM)
    for position, tokens in enumerate(token_sets):
        forest.add(str(position), _minhash(tokens))
    forest.index()
    return forest
