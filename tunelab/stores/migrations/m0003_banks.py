"""Example banks: named sets of input/output examples with a fixed, seeded train/test split.

An example's id never changes and its text never changes either (editing means adding a new
example), so ids recorded in replies, runs and comparisons keep pointing at what was used.
The `content_hash` makes re-importing the same rows a no-op (deduplication).
"""

import sqlite3

from tunelab.stores.migrations import run_script


def migrate(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE banks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            instruction TEXT NOT NULL DEFAULT '',
            test_size REAL NOT NULL,
            seed INTEGER NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        );
        CREATE TABLE examples (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            bank_id INTEGER NOT NULL REFERENCES banks(id) ON DELETE CASCADE,
            input TEXT NOT NULL,
            output TEXT NOT NULL,
            split TEXT NOT NULL CHECK (split IN ('train', 'test')),
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (bank_id, content_hash)
        );
        CREATE INDEX examples_bank_split ON examples (bank_id, split, id)
        """,
    )
