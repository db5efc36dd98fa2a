"""Registered model files, and a cache of their hashes so a GGUF is hashed once, not per reply."""

import sqlite3

from tunelab.stores.migrations import run_script


def migrate(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE file_hashes (
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL
        );
        CREATE TABLE models (
            name TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            added_at TEXT NOT NULL
        )
        """,
    )
