"""Feedback: thumbs up/down on single replies and A/B preference votes, each with a frozen snapshot.

A rating is keyed by its `subject` (`message:<id>` for a chat reply, `compare:<id>:<arm>:<pos>`
for a comparison output), so rating a reply again replaces the old score instead of adding a
second one. The snapshot (prompt messages as sent, incl. ICL examples, the reply, model hash,
adapter/arm and sampler) is copied, not referenced: editing or deleting the conversation later
never changes what was rated, and `message_id` just becomes NULL.
"""

import sqlite3

from tunelab.stores.migrations import run_script


def migrate(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE ratings (
            id INTEGER PRIMARY KEY,
            subject TEXT NOT NULL UNIQUE,
            message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
            conversation_id INTEGER,
            rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
            reason TEXT NOT NULL DEFAULT '',
            comment TEXT NOT NULL DEFAULT '',
            prompt_json TEXT NOT NULL,
            reply TEXT NOT NULL,
            model_path TEXT,
            model_sha256 TEXT,
            adapter TEXT,
            arm TEXT,
            params_json TEXT NOT NULL DEFAULT '{}',
            provenance_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX ratings_by_model ON ratings(model_sha256, adapter);
        CREATE TABLE preference_votes (
            id INTEGER PRIMARY KEY,
            prompt_json TEXT NOT NULL,
            a_reply TEXT NOT NULL,
            b_reply TEXT NOT NULL,
            a_arm TEXT,
            b_arm TEXT,
            choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
            model_sha256 TEXT,
            a_snapshot_json TEXT NOT NULL DEFAULT '{}',
            b_snapshot_json TEXT NOT NULL DEFAULT '{}',
            comment TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        )
        """,
    )
