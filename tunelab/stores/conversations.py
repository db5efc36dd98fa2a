"""Conversations and messages in SQLite, each assistant reply with its provenance."""

from __future__ import annotations

import builtins
import json
import re
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.errors import TunelabError
from tunelab.stores.db import inserted_id, now, transaction


@dataclass
class Conversation:
    id: int
    title: str
    system_prompt: str
    params: dict[str, Any]
    created_at: str
    updated_at: str


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    created_at: str
    model_path: str | None = None
    model_sha256: str | None = None
    adapter: str | None = None
    params: dict[str, Any] | None = None
    seed: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    decode_tps: float | None = None
    total_ms: float | None = None
    finish_reason: str | None = None
    interrupted: bool = False
    dropped_turns: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReplyRecord:
    """What the engine knows about one reply, as stored beside its text."""

    model_path: str
    model_sha256: str
    params: dict[str, Any]
    seed: int | None
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    decode_tps: float | None
    total_ms: float
    finish_reason: str
    interrupted: bool = False
    dropped_turns: int = 0
    adapter: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchHit:
    """One message that matched `ConversationStore.search`, with where it sits and why it matched."""

    message: Message
    conversation_title: str
    snippet: str
    """The matching part of the message, matched words in [brackets]."""
    rank: float
    """FTS5 bm25 score: lower is a better match."""


def fts_query(text: str) -> str:
    """The user's words as an FTS5 query: every word must occur (as a word prefix, so a filter
    matches while typing). Each word is quoted, so quotes, `-`, `*` or AND/OR in what the user
    typed are searched for as text, never parsed as query syntax."""
    words = re.findall(r"\w+", text)
    if not words:
        raise TunelabError(f"nothing to search for in {text!r}: give at least one word")
    return " ".join(f'"{w}"*' for w in words)


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        system_prompt=row["system_prompt"],
        params=json.loads(row["params_json"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _message(row: sqlite3.Row) -> Message:
    return _message_from(dict(row))


def _message_from(data: dict[str, Any]) -> Message:
    data["params"] = json.loads(data.pop("params_json") or "null")
    data["provenance"] = json.loads(data.pop("provenance_json") or "{}")
    data["interrupted"] = bool(data["interrupted"])
    return Message(**data)


class ConversationStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def create(self, title: str = "New chat", system_prompt: str = "", params: dict[str, Any] | None = None) -> Conversation:
        stamp = now()
        with transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO conversations (title, system_prompt, params_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (title, system_prompt, json.dumps(params or {}), stamp, stamp),
            )
        return self.get(inserted_id(cur))

    def start(self, title: str, system_prompt: str, prompt: str) -> Conversation:
        """A new conversation with its first user message, in one transaction: never an empty one."""
        stamp = now()
        with transaction(self.conn):
            conversation_id = inserted_id(
                self.conn.execute(
                    "INSERT INTO conversations (title, system_prompt, params_json, created_at, updated_at) VALUES (?, ?, '{}', ?, ?)",
                    (title, system_prompt, stamp, stamp),
                )
            )
            self.conn.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (?, 'user', ?, ?)",
                (conversation_id, prompt, stamp),
            )
        return self.get(conversation_id)

    def get(self, conversation_id: int) -> Conversation:
        row = self.conn.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise TunelabError(f"no conversation with id {conversation_id} (see `tunelab history list`)")
        return _conversation(row)

    def list(self) -> list[Conversation]:
        rows = self.conn.execute("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC")
        return [_conversation(r) for r in rows]

    def search(self, text: str, limit: int | None = None) -> builtins.list[SearchHit]:
        """Messages containing every word of `text` (full-text index of m0007), best match first."""
        rows = self.conn.execute(
            "SELECT m.*, c.title AS conversation_title, bm25(messages_fts) AS rank,"
            " snippet(messages_fts, 0, '[', ']', '…', 16) AS snippet"
            " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid JOIN conversations c ON c.id = m.conversation_id"
            " WHERE messages_fts MATCH ? ORDER BY rank, m.id DESC LIMIT ?",
            (fts_query(text), limit if limit else -1),
        )
        hits = []
        for row in rows:
            data = dict(row)
            extra = {k: data.pop(k) for k in ("conversation_title", "rank", "snippet")}
            hits.append(SearchHit(_message_from(data), extra["conversation_title"], extra["snippet"], extra["rank"]))
        return hits

    def matching(self, text: str) -> builtins.list[Conversation]:
        """Conversations whose title or any message contains the words of `text`, newest first
        (the conversation-list filter); blank text means all of them."""
        if not re.search(r"\w", text):
            return self.list()
        words = re.findall(r"\w+", text.lower())
        title_clause = " AND ".join("lower(title) LIKE ? ESCAPE '\\'" for _ in words)
        rows = self.conn.execute(
            "SELECT * FROM conversations WHERE id IN (SELECT m.conversation_id FROM messages_fts"
            " JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH ?)"
            f" OR ({title_clause}) ORDER BY updated_at DESC, id DESC",
            (fts_query(text), *("%" + w.replace("_", "\\_") + "%" for w in words)),
        )
        return [_conversation(r) for r in rows]

    def update(self, conversation_id: int, **changes: Any) -> Conversation:
        """Change title, system_prompt and/or params."""
        columns = {"title": "title", "system_prompt": "system_prompt", "params": "params_json"}
        sets, values = [], []
        for key, value in changes.items():
            sets.append(f"{columns[key]} = ?")
            values.append(json.dumps(value) if key == "params" else value)
        self.get(conversation_id)
        with transaction(self.conn):
            self.conn.execute(
                f"UPDATE conversations SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                (*values, now(), conversation_id),
            )
        return self.get(conversation_id)

    def delete(self, conversation_id: int) -> None:
        self.get(conversation_id)
        with transaction(self.conn):
            self.conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def messages(self, conversation_id: int) -> builtins.list[Message]:
        rows = self.conn.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,))
        return [_message(r) for r in rows]

    def message(self, message_id: int) -> Message:
        row = self.conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise TunelabError(f"no message with id {message_id}")
        return _message(row)

    def add_user(self, conversation_id: int, content: str) -> Message:
        return self._insert(conversation_id, "user", content, {})

    def add_reply(self, conversation_id: int, content: str, record: ReplyRecord) -> Message:
        data = asdict(record)
        data["params_json"] = json.dumps(data.pop("params"))
        data["provenance_json"] = json.dumps(data.pop("provenance"))
        data["interrupted"] = int(data["interrupted"])
        return self._insert(conversation_id, "assistant", content, data)

    def delete_message(self, message_id: int) -> None:
        """Remove one message (used by regenerate, which replaces the last reply)."""
        with transaction(self.conn):
            self.conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def _insert(self, conversation_id: int, role: str, content: str, extra: dict[str, Any]) -> Message:
        self.get(conversation_id)
        stamp = now()
        columns = ["conversation_id", "role", "content", "created_at", *extra]
        values = [conversation_id, role, content, stamp, *extra.values()]
        with transaction(self.conn):
            cur = self.conn.execute(f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values)
            self.conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (stamp, conversation_id))
        return self.message(inserted_id(cur))
