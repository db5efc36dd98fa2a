"""A bank's train split as a Chroma collection: embedded store under the data dir, or a server.

One collection per (bank, embedding model), so changing the model never mixes vector spaces.
Syncing adds only examples that are not in the collection yet (and removes ones that left the
pool), so re-indexing after `bank add` embeds just the new rows. Chroma is always given our
own embedding function: it must never fall back to downloading its default ONNX model.

The index is derived data (SQLite holds the examples): an embedded store that is damaged is moved
aside to `chroma.damaged` and rebuilt by the next sync, whose progress line shows the re-embedding.
A server started with token auth is reached with `chroma_token` (or TUNELAB_CHROMA_TOKEN).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.faults import pause_point
from tunelab.stores.banks import Bank, Example
from tunelab.text import one_line

ADD_BATCH = 256
log = logging.getLogger(__name__)


@register_embedding_function
class TunelabEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma's hook into our encoder (we also pass vectors explicitly, so it is a guard).

    Registered so that Chroma can rebuild it from a collection's stored config; a rebuilt one
    has no encoder and refuses to embed rather than fall back to Chroma's default model.
    """

    def __init__(self, encode: Callable[[Sequence[str]], list[list[float]]] | None, model: str) -> None:
        self.encode = encode
        self.model = model

    def __call__(self, input: Documents) -> Embeddings:
        if self.encode is None:
            raise TunelabError("this Chroma collection belongs to tunelab: open it through tunelab")
        return self.encode(list(input))  # type: ignore[return-value]  # Chroma's wrapper of __call__ makes the lists arrays

    @staticmethod
    def name() -> str:
        return "tunelab"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> TunelabEmbeddingFunction:
        return TunelabEmbeddingFunction(None, str(config.get("model", "")))

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> Space:
        return "cosine"


TOKEN_PROVIDER = "chromadb.auth.token_authn.TokenAuthClientProvider"


def client(settings: Settings) -> Any:
    """An embedded PersistentClient under the data dir, or an HttpClient for `chroma_url`."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    if not settings.chroma_url:
        return chromadb.PersistentClient(path=str(settings.dirs.chroma), settings=ChromaSettings(anonymized_telemetry=False))
    url = urlparse(settings.chroma_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise TunelabError(f"bad chroma_url {settings.chroma_url!r}: expected http://HOST:PORT")
    auth: dict[str, Any] = (  # Settings' own field types, one per key
        {"chroma_client_auth_provider": TOKEN_PROVIDER, "chroma_client_auth_credentials": settings.chroma_token}
        if settings.chroma_token
        else {}
    )
    try:
        remote = chromadb.HttpClient(
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=ChromaSettings(anonymized_telemetry=False, **auth),
        )
        remote.heartbeat()
        remote.list_collections(limit=1)  # the heartbeat needs no auth; this does
    except Exception as exc:  # noqa: BLE001 - chromadb raises ValueError/ConnectError/... depending on the failure
        if "auth" in str(exc).lower() or "401" in str(exc) or "403" in str(exc):
            raise TunelabError(
                f"Chroma server at {settings.chroma_url} refused the request ({type(exc).__name__}): "
                "set chroma_token (or TUNELAB_CHROMA_TOKEN) to the server's token"
            ) from None
        raise TunelabError(
            f"Chroma server at {settings.chroma_url} is unreachable ({type(exc).__name__}): start `chroma run` or unset chroma_url"
        ) from None
    return remote


def move_damaged_store(settings: Settings) -> Path:
    """Put a damaged embedded store aside (`chroma.damaged`, replacing an older one) so it is rebuilt."""
    import shutil

    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()  # chromadb keeps one open system per path
    store, aside = settings.dirs.chroma, settings.dirs.chroma_damaged
    shutil.rmtree(aside, ignore_errors=True)
    if store.exists():
        store.rename(aside)
    return aside


def bank_key(settings: Settings, bank: Bank) -> str:
    """Unique per data dir and bank (ids restart in another data dir sharing the same server)."""
    return hashlib.sha256(f"{settings.home.resolve()}|{bank.id}|{bank.created_at}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Neighbour:
    id: int
    similarity: float
    embedding: list[float]


class BankIndex:
    def __init__(self, settings: Settings, bank: Bank, model_path: Path, encode: Callable[..., list[list[float]]]) -> None:
        self.encode = encode
        model_key = hashlib.sha256(str(model_path).encode()).hexdigest()[:8]
        self.name = f"tunelab-{bank_key(settings, bank)}-{model_key}"
        self.rebuilt_from: Path | None = None
        """Where a damaged embedded store was moved before this index was rebuilt (None: it was fine)."""
        try:
            self.collection = self._open(settings, bank, model_path)
        except TunelabError:
            raise
        except BaseException as exc:  # a damaged embedded store: chromadb raises sqlite, rust (panic) and value errors alike
            if settings.chroma_url or not (isinstance(exc, Exception) or type(exc).__name__ == "PanicException"):
                raise
            self.rebuilt_from = move_damaged_store(settings)
            log.warning(
                "the Chroma store %s was damaged (%s): moved it to %s; rebuilding the index from the database",
                settings.dirs.chroma,
                one_line(f"{type(exc).__name__}: {exc}", 80),
                self.rebuilt_from,
            )
            self.collection = self._open(settings, bank, model_path)

    def _open(self, settings: Settings, bank: Bank, model_path: Path) -> Any:
        collection = client(settings).get_or_create_collection(
            self.name,
            metadata={"bank": bank.name, "embedding_model": str(model_path)},
            configuration={"hnsw": {"space": "cosine"}},
            embedding_function=TunelabEmbeddingFunction(self.encode, str(model_path)),
        )
        collection.get(include=[], limit=1)  # a damaged store often opens and fails on the first read
        return collection

    def sync(self, pool: Sequence[Example], progress: Callable[[int, int], None] | None = None) -> int:
        """Embed and add the pool's examples missing from the collection; returns how many."""
        present = set(self.collection.get(include=[])["ids"])
        wanted = {str(e.id) for e in pool}
        if stale := sorted(present - wanted):
            self.collection.delete(ids=stale)
        missing = [e for e in pool if str(e.id) not in present]
        done = 0
        for start in range(0, len(missing), ADD_BATCH):
            batch = missing[start : start + ADD_BATCH]
            self.collection.add(
                ids=[str(e.id) for e in batch],
                embeddings=self.encode([e.input for e in batch]),
                documents=[e.input for e in batch],
            )
            done += len(batch)
            pause_point("chroma.batch_added")
            if progress is not None:
                progress(done, len(missing))
        return len(missing)

    def nearest(self, vector: list[float], n: int) -> list[Neighbour]:
        result = self.collection.query(query_embeddings=[vector], n_results=n, include=["distances", "embeddings"])
        ids, distances, embeddings = result["ids"][0], result["distances"][0], result["embeddings"][0]
        return [Neighbour(int(i), 1.0 - float(d), list(map(float, v))) for i, d, v in zip(ids, distances, embeddings)]


def drop_bank(settings: Settings, bank: Bank) -> int:
    """Delete the bank's collections (every embedding model); returns how many."""
    store = client(settings)
    prefix = f"tunelab-{bank_key(settings, bank)}-"
    names = [c if isinstance(c, str) else c.name for c in store.list_collections()]
    for name in names:
        if name.startswith(prefix):
            store.delete_collection(name)
    return sum(name.startswith(prefix) for name in names)
