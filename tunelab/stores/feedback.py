"""Ratings (👍 / 👎) and A/B preference votes, each with a frozen snapshot of what was judged.

The feedback trainers learn from exactly what the user saw: the prompt messages as the model
received them (system prompt, ICL examples, the history that fitted the context), not from the
conversation as it looks today. So a rating copies that snapshot when it is made.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import TunelabError
from tunelab.faults import pause_point
from tunelab.stores.conversations import ConversationStore, Message
from tunelab.stores.db import now, transaction

RATINGS = ("up", "down")
CHOICES = ("a", "b", "tie", "both_bad")


@dataclass
class Snapshot:
    """One reply as it was judged: the prompt messages as sent and how the reply was made."""

    prompt: list[dict[str, str]]
    reply: str
    model_path: str | None = None
    model_sha256: str | None = None
    adapter: str | None = None
    arm: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prompt or self.prompt[-1].get("role") != "user":
            raise TunelabError("a rated reply needs a prompt that ends with a user message")


@dataclass
class Rating:
    id: int
    subject: str
    rating: str
    snapshot: Snapshot
    reason: str = ""
    comment: str = ""
    message_id: int | None = None
    conversation_id: int | None = None
    created_at: str = ""
    updated_at: str = ""


@dataclass
class PreferenceVote:
    """Two replies to one prompt and which was better (`a`, `b`), or neither (`tie`, `both_bad`)."""

    prompt: list[dict[str, str]]
    a_reply: str
    b_reply: str
    choice: str
    a_arm: str | None = None
    b_arm: str | None = None
    model_sha256: str | None = None
    a_snapshot: dict[str, Any] = field(default_factory=dict)
    b_snapshot: dict[str, Any] = field(default_factory=dict)
    comment: str = ""
    id: int | None = None
    created_at: str | None = None

    def __post_init__(self) -> None:
        if self.choice not in CHOICES:
            raise TunelabError(f"unknown choice {self.choice!r} (choose from {', '.join(CHOICES)})")


@dataclass(frozen=True)
class FeedbackCounts:
    """Ratings and pairs for one (model, adapter): what the Feedback screen's table shows."""

    model_sha256: str | None
    adapter: str | None
    up: int
    down: int
    pairs: int


def prompt_as_sent(conversations: ConversationStore, message: Message) -> list[dict[str, str]]:
    """Rebuild the messages the model received for `message` from the stored history.

    `provenance["prompt_messages"]`, when the chat service recorded it, is used verbatim.
    Otherwise: system prompt, the ICL examples recorded in `provenance["icl"]` (as user /
    assistant turns right after the system prompt, or its `messages` as given), and the earlier
    turns minus the `dropped_turns` that did not fit the context window.
    """
    if message.role != "assistant":
        raise TunelabError(f"message {message.id} is a {message.role} message; only replies can be rated")
    recorded = message.provenance.get("prompt_messages")
    if recorded:
        return [{"role": m["role"], "content": m["content"]} for m in recorded]
    conversation = conversations.get(message.conversation_id)
    earlier = [m for m in conversations.messages(message.conversation_id) if m.id < message.id]
    head = [{"role": "system", "content": conversation.system_prompt}] if conversation.system_prompt else []
    icl = message.provenance.get("icl") or {}
    if icl.get("messages"):
        head += [{"role": m["role"], "content": m["content"]} for m in icl["messages"]]
    else:
        for example in icl.get("examples", []):
            head += [{"role": "user", "content": example["input"]}, {"role": "assistant", "content": example["output"]}]
    body = [{"role": m.role, "content": m.content} for m in earlier][message.dropped_turns :]
    return head + body


def _rating(row: sqlite3.Row) -> Rating:
    snapshot = Snapshot(
        prompt=json.loads(row["prompt_json"]),
        reply=row["reply"],
        model_path=row["model_path"],
        model_sha256=row["model_sha256"],
        adapter=row["adapter"],
        arm=row["arm"],
        params=json.loads(row["params_json"]),
        provenance=json.loads(row["provenance_json"]),
    )
    return Rating(
        id=row["id"],
        subject=row["subject"],
        rating=row["rating"],
        snapshot=snapshot,
        reason=row["reason"],
        comment=row["comment"],
        message_id=row["message_id"],
        conversation_id=row["conversation_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _vote(row: sqlite3.Row) -> PreferenceVote:
    return PreferenceVote(
        id=row["id"],
        prompt=json.loads(row["prompt_json"]),
        a_reply=row["a_reply"],
        b_reply=row["b_reply"],
        choice=row["choice"],
        a_arm=row["a_arm"],
        b_arm=row["b_arm"],
        model_sha256=row["model_sha256"],
        a_snapshot=json.loads(row["a_snapshot_json"]),
        b_snapshot=json.loads(row["b_snapshot_json"]),
        comment=row["comment"],
        created_at=row["created_at"],
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class FeedbackStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.conversations = ConversationStore(conn)

    def rate_message(self, message_id: int, rating: str | None, reason: str = "", comment: str = "") -> Rating | None:
        """Rate a stored chat reply `up` / `down`, or remove its rating with None."""
        if rating is None:
            self.remove(f"message:{message_id}")
            return None
        message = self.conversations.message(message_id)
        snapshot = Snapshot(
            prompt=prompt_as_sent(self.conversations, message),
            reply=message.content,
            model_path=message.model_path,
            model_sha256=message.model_sha256,
            adapter=message.adapter,
            params=message.params or {},
            provenance=message.provenance,
        )
        return self.rate(f"message:{message_id}", snapshot, rating, reason, comment, message_id, message.conversation_id)

    def rate(
        self,
        subject: str,
        snapshot: Snapshot,
        rating: str,
        reason: str = "",
        comment: str = "",
        message_id: int | None = None,
        conversation_id: int | None = None,
    ) -> Rating:
        """Store (or replace) the one current rating of `subject`; the first rating's time is kept."""
        if rating not in RATINGS:
            raise TunelabError(f"unknown rating {rating!r} (use up, down or none)")
        stamp = now()
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO ratings (subject, message_id, conversation_id, rating, reason, comment, prompt_json, reply,"
                " model_path, model_sha256, adapter, arm, params_json, provenance_json, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(subject) DO UPDATE SET rating = excluded.rating, reason = excluded.reason,"
                " comment = excluded.comment, updated_at = excluded.updated_at",
                (
                    subject,
                    message_id,
                    conversation_id,
                    rating,
                    reason,
                    comment,
                    _dumps(snapshot.prompt),
                    snapshot.reply,
                    snapshot.model_path,
                    snapshot.model_sha256,
                    snapshot.adapter,
                    snapshot.arm,
                    _dumps(snapshot.params),
                    _dumps(snapshot.provenance),
                    stamp,
                    stamp,
                ),
            )
            pause_point("feedback.rating_written")
        return self.get(subject)

    def get(self, subject: str) -> Rating:
        row = self.conn.execute("SELECT * FROM ratings WHERE subject = ?", (subject,)).fetchone()
        if row is None:
            raise TunelabError(f"no rating for {subject} (see `tunelab feedback list`)")
        return _rating(row)

    def for_message(self, message_id: int) -> Rating | None:
        row = self.conn.execute("SELECT * FROM ratings WHERE subject = ?", (f"message:{message_id}",)).fetchone()
        return _rating(row) if row else None

    def remove(self, subject: str) -> None:
        """Remove a rating; removing one that does not exist is fine (the result is the same)."""
        with transaction(self.conn):
            self.conn.execute("DELETE FROM ratings WHERE subject = ?", (subject,))

    def delete(self, rating_id: int) -> None:
        with transaction(self.conn):
            if self.conn.execute("DELETE FROM ratings WHERE id = ?", (rating_id,)).rowcount == 0:
                raise TunelabError(f"no rating with id {rating_id} (see `tunelab feedback list`)")

    def ratings(self, rating: str | None = None, model_sha256: str | None = None, adapter: str | None = None) -> list[Rating]:
        """All current ratings, oldest first, optionally filtered (adapter "" = the base model)."""
        rows = [_rating(r) for r in self.conn.execute("SELECT * FROM ratings ORDER BY id")]
        return [
            r
            for r in rows
            if (rating is None or r.rating == rating)
            and (model_sha256 is None or r.snapshot.model_sha256 == model_sha256)
            and (adapter is None or (r.snapshot.adapter or "") == adapter)
        ]

    def vote(self, vote: PreferenceVote) -> PreferenceVote:
        """Record an A/B vote between two replies to the same prompt."""
        if vote.a_reply == vote.b_reply and vote.choice in ("a", "b"):
            raise TunelabError("both replies are identical: a preference between them teaches nothing")
        stamp = now()
        with transaction(self.conn):
            vote.id = self.conn.execute(
                "INSERT INTO preference_votes (prompt_json, a_reply, b_reply, a_arm, b_arm, choice, model_sha256,"
                " a_snapshot_json, b_snapshot_json, comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _dumps(vote.prompt),
                    vote.a_reply,
                    vote.b_reply,
                    vote.a_arm,
                    vote.b_arm,
                    vote.choice,
                    vote.model_sha256,
                    _dumps(vote.a_snapshot),
                    _dumps(vote.b_snapshot),
                    vote.comment,
                    stamp,
                ),
            ).lastrowid
            pause_point("feedback.vote_written")
        vote.created_at = stamp
        return vote

    def votes(self) -> list[PreferenceVote]:
        return [_vote(r) for r in self.conn.execute("SELECT * FROM preference_votes ORDER BY id")]

    def delete_vote(self, vote_id: int) -> None:
        with transaction(self.conn):
            if self.conn.execute("DELETE FROM preference_votes WHERE id = ?", (vote_id,)).rowcount == 0:
                raise TunelabError(f"no vote with id {vote_id} (see `tunelab feedback list`)")

    def counts(self) -> list[FeedbackCounts]:
        """Up / down ratings and decisive A/B votes per (model hash, adapter or arm)."""
        table: dict[tuple[str | None, str | None], list[int]] = {}
        for r in self.ratings():
            key = (r.snapshot.model_sha256, r.snapshot.adapter or r.snapshot.arm)
            table.setdefault(key, [0, 0, 0])[0 if r.rating == "up" else 1] += 1
        for v in self.votes():
            if v.choice in ("a", "b"):
                for arm in {v.a_arm, v.b_arm}:
                    table.setdefault((v.model_sha256, arm), [0, 0, 0])[2] += 1
        return [FeedbackCounts(m, a, *n) for (m, a), n in sorted(table.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))]
