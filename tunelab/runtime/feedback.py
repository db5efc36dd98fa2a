"""Ratings and A/B votes as `tunelab rate` / `tunelab feedback` and the feedback screen use them:
rate a stored reply, list and count, delete, and export as training rows. Neither face holds the
store or knows the export formats' details."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.finetune import feedback_data
from tunelab.stores.feedback import FeedbackCounts, FeedbackStore, Rating

FORMATS = feedback_data.FORMATS


@dataclass(frozen=True)
class VoteTally:
    """How many A/B votes there are, and how many of them picked a winner (not a tie or both bad)."""

    votes: int
    decisive: int


class FeedbackService:
    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.store = FeedbackStore(conn)

    def rate(self, message_id: int, rating: str | None, reason: str = "", comment: str = "") -> Rating | None:
        """Rate stored reply `message_id` up / down (None removes the rating); the stored rating."""
        return self.store.rate_message(message_id, rating, reason, comment)

    def counts(self) -> list[FeedbackCounts]:
        """👍 / 👎 / pairs per model and adapter."""
        return self.store.counts()

    def ratings(self, rating: str | None = None, adapter: str | None = None) -> list[Rating]:
        """Oldest first; `adapter` "" means replies of the plain base model."""
        return self.store.ratings(rating=rating, adapter=adapter)

    def vote_tally(self) -> VoteTally:
        votes = self.store.votes()
        return VoteTally(len(votes), sum(1 for v in votes if v.choice in ("a", "b")))

    def delete(self, rating_id: int) -> None:
        self.store.delete(rating_id)

    def delete_vote(self, vote_id: int) -> None:
        self.store.delete_vote(vote_id)

    def rows(self, fmt: str) -> list[dict[str, Any]]:
        """The ratings and votes as `fmt` training rows."""
        return feedback_data.rows_for(feedback_data.collect(self.conn), fmt)

    def export(self, fmt: str, path: Path | None = None) -> tuple[int, Path]:
        """Write the ratings and votes as `fmt` training rows (JSONL; LLaMA-Factory also gets its
        dataset_info.json), by default to a new file under the data dir; (rows written, file)."""
        path = path or feedback_data.export_path(self.settings.home, fmt)
        return feedback_data.export(self.conn, fmt, path), path
