"""Embedding selectors: nearest examples by cosine similarity in Chroma, optionally diversified (MMR).

MMR (maximal marginal relevance) picks, one at a time, the candidate that maximises
`λ·sim(query, c) − (1−λ)·max sim(c, already picked)`: near-duplicates of an example already
in the prompt lose to a slightly less similar but different one.
"""

from __future__ import annotations

import numpy as np

from tunelab.config import Settings
from tunelab.icl.embeddings import embedding_model_path, encoder
from tunelab.icl.selectors import IndexProgress, Selected, check_k, selected
from tunelab.stores.banks import Bank, Example
from tunelab.stores.chroma_index import BankIndex, Neighbour

MMR_LAMBDA = 0.5
MMR_FETCH_PER_K = 5


class EmbeddingSelector:
    def __init__(
        self, pool: list[Example], bank: Bank, settings: Settings, diverse: bool = False, progress: IndexProgress | None = None
    ) -> None:
        self.kind = "mmr" if diverse else "embedding"
        self.pool = pool
        self.bank = bank.name
        self.by_id = {e.id: e for e in pool}
        path = embedding_model_path(settings)
        self.encoder = encoder(path)
        self.index = BankIndex(settings, bank, path, self.encoder.encode)
        self.indexed = self.index.sync(pool, progress)

    def select(self, query: str, k: int) -> list[Selected]:
        check_k(k, self.pool, self.bank)
        (vector,) = self.encoder.encode([query])
        fetch = min(len(self.pool), k * MMR_FETCH_PER_K) if self.kind == "mmr" else k
        found = self.index.nearest(vector, fetch)
        chosen = mmr(found, k) if self.kind == "mmr" else found[:k]
        return [selected(self.by_id[n.id], n.similarity) for n in chosen]


def mmr(candidates: list[Neighbour], k: int, weight: float = MMR_LAMBDA) -> list[Neighbour]:
    """The k candidates picked greedily by maximal marginal relevance (relevance = `.similarity`)."""
    if not candidates:
        return []
    vectors = np.array([c.embedding for c in candidates], dtype=np.float32)
    pairwise = vectors @ vectors.T
    relevance = np.array([c.similarity for c in candidates])
    picked: list[int] = []
    left = list(range(len(candidates)))
    while left and len(picked) < k:
        redundancy = pairwise[np.ix_(left, picked)].max(axis=1) if picked else np.zeros(len(left))
        gains = weight * relevance[left] - (1 - weight) * redundancy
        best = left[int(np.argmax(gains))]  # argmax takes the first maximum: ties go to the more similar
        picked.append(best)
        left.remove(best)
    return [candidates[i] for i in picked]
