"""What the feedback screen shows and does, so the screen holds no store or export logic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tunelab.config import Settings
from tunelab.finetune import feedback_data
from tunelab.stores.feedback import FeedbackCounts, FeedbackStore, PreferenceVote, Rating

FORMATS = feedback_data.FORMATS


class FeedbackBrowser:
    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.store = FeedbackStore(conn)

    def counts(self) -> list[FeedbackCounts]:
        """👍 / 👎 / pairs per model and adapter."""
        return self.store.counts()

    def ratings(self, rating: str | None = None, adapter: str | None = None) -> list[Rating]:
        return self.store.ratings(rating=rating, adapter=adapter)

    def votes(self) -> list[PreferenceVote]:
        return self.store.votes()

    def delete(self, rating_id: int) -> None:
        self.store.delete(rating_id)

    def export(self, fmt: str) -> tuple[int, Path]:
        """Write the ratings and votes as `fmt` training rows; (rows written, file)."""
        path = feedback_data.export_path(self.settings.home, fmt)
        return feedback_data.export(self.conn, fmt, path), path
