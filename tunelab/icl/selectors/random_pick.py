"""The baseline selector: k examples drawn at random, reproducibly for a given seed and query."""

from __future__ import annotations

import hashlib
import random

from tunelab.icl.selectors import Selected, check_k, selected
from tunelab.stores.banks import Example


class RandomSelector:
    kind = "random"

    def __init__(self, pool: list[Example], bank: str, seed: int = 0) -> None:
        self.pool = pool
        self.bank = bank
        self.seed = seed

    def select(self, query: str, k: int) -> list[Selected]:
        check_k(k, self.pool, self.bank)
        # Seeded per query: the same query gets the same examples in every run and every arm.
        digest = hashlib.sha256(f"{self.seed}\x1f{query}".encode()).hexdigest()
        return [selected(e, 0.0) for e in random.Random(digest).sample(self.pool, k)]
