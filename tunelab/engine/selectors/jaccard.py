"""Jaccard selector: the examples whose word sets overlap the query's most.

Up to `EXACT_LIMIT` (50k) examples the score of every example is computed exactly, through an
inverted index (only examples sharing a token with the query are touched). Above it a MinHash
LSH forest (datasketch) proposes candidates that are then scored exactly; its recall against
the exact ranking is measured in tests and in `benchmarks/selection.py`.
Ties are broken by example id, so a selection is deterministic.
"""

from __future__ import annotations

from collections import defaultdict

from tunelab.engine.selectors import Selected, check_k, selected
from tunelab.engine.selectors.tokens import jaccard, tokenize
from tunelab.stores.banks import Example

EXACT_LIMIT = 50_000
"""Measured (docs/benchmarks.md): the inverted index is exact and faster than the LSH forest up to here."""
NUM_PERM = 128
CANDIDATES_PER_K = 20
"""How many LSH candidates to re-score exactly per requested example."""


class JaccardSelector:
    kind = "jaccard"

    def __init__(self, pool: list[Example], bank: str, exact_limit: int = EXACT_LIMIT) -> None:
        self.pool = pool
        self.bank = bank
        self.tokens = [tokenize(e.input) for e in pool]
        self.postings: dict[str, list[int]] = defaultdict(list)
        for position, tokens in enumerate(self.tokens):
            for token in tokens:
                self.postings[token].append(position)
        self.forest = _build_forest(self.tokens) if len(pool) > exact_limit else None

    @property
    def approximate(self) -> bool:
        return self.forest is not None

    def select(self, query: str, k: int) -> list[Selected]:
        check_k(k, self.pool, self.bank)
        wanted = tokenize(query)
        candidates = self._forest_candidates(wanted, k) if self.forest is not None else self._sharing(wanted)
        scored = sorted(((jaccard(wanted, self.tokens[p]), p) for p in candidates), key=lambda sp: (-sp[0], self.pool[sp[1]].id))
        chosen = [p for _, p in scored[:k]]
        if len(chosen) < k:  # fewer examples share a word than asked for: fill with zero-overlap ones, by id
            taken = set(chosen)
            chosen += [p for p in range(len(self.pool)) if p not in taken][: k - len(chosen)]
        return [selected(self.pool[p], jaccard(wanted, self.tokens[p])) for p in chosen]

    def _sharing(self, wanted: frozenset[str]) -> set[int]:
        """Every example with at least one token in common: all that can score above zero."""
        return {p for token in wanted for p in self.postings.get(token, ())}

    def _forest_candidates(self, wanted: frozenset[str], k: int) -> set[int]:
        assert self.forest is not None
        return {int(key) for key in self.forest.query(_minhash(wanted), k * CANDIDATES_PER_K)}


def _minhash(tokens: frozenset[str]):  # type: ignore[no-untyped-def]
    from datasketch import MinHash

    sketch = MinHash(num_perm=NUM_PERM)
    sketch.update_batch([t.encode("utf-8") for t in tokens])
    return sketch


def _build_forest(token_sets: list[frozenset[str]]):  # type: ignore[no-untyped-def]
    from datasketch import MinHashLSHForest

    forest = MinHashLSHForest(num_perm=NUM_PERM)
    for position, tokens in enumerate(token_sets):
        forest.add(str(position), _minhash(tokens))
    forest.index()
    return forest
