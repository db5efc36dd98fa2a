"""Conversations and their messages, each reply with full provenance."""

import sqlite3

from tunelab.stores.migrations import run_script


def migrate(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL,
            system_prompt TEXT NOT NULL DEFAULT '',
            params_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            created_at TEXT NOT NULL,
            model_path TEXT,
            model_sha256 TEXT,
            adapter TEXT,
            params_json TEXT,
            seed INTEGER,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            ttft_ms REAL,
            decode_tps REAL,
            total_ms REAL,
            finish_reason TEXT,
            interrupted INTEGER NOT NULL DEFAULT 0,
            dropped_turns INTEGER NOT NULL DEFAULT 0,
            provenance_json TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
        """,
    )
