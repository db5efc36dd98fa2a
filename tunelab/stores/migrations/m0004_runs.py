"""Training runs and the adapters they produce.

A run row exists from the moment training starts (status `running`) and records everything
needed to reproduce or resume it: base, bank, split, the training example ids (the compare
leakage guard reads them), hyper-parameters, loss history and timings. An adapter row is
written only after its files are completely on disk, so `adapters` never lists a half-written one.
"""

import sqlite3

from tunelab.stores.migrations import run_script


def migrate(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            method TEXT NOT NULL DEFAULT 'sft',
            base_gguf TEXT NOT NULL,
            base_sha256 TEXT NOT NULL,
            hf_dir TEXT NOT NULL,
            bank TEXT NOT NULL,
            split TEXT NOT NULL DEFAULT 'train',
            example_ids_json TEXT NOT NULL DEFAULT '[]',
            args_json TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
            step INTEGER NOT NULL DEFAULT 0,
            total_steps INTEGER NOT NULL DEFAULT 0,
            loss_history_json TEXT NOT NULL DEFAULT '[]',
            error TEXT NOT NULL DEFAULT '',
            device TEXT NOT NULL DEFAULT '',
            run_dir TEXT NOT NULL,
            train_seconds REAL NOT NULL DEFAULT 0,
            tokens_per_s REAL,
            peak_memory_mb REAL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX runs_by_bank ON runs(bank, status);
        CREATE TABLE adapters (
            name TEXT PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            bank TEXT NOT NULL,
            base_sha256 TEXT NOT NULL,
            peft_dir TEXT NOT NULL,
            gguf_path TEXT NOT NULL,
            metrics_json TEXT NOT NULL DEFAULT '{}',
            exports_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )
        """,
    )
