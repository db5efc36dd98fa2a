"""Comparisons: arms x held-out items, every output and score.

A result row is written the moment its (arm, item) finishes, so an interrupted comparison
resumes where it stopped. `arm_fingerprint` ties a result to the exact adapter file and prompt
setup it came from: retrain an adapter under the same name and its stale results are redone.
Side-by-side votes are not here: they are preference records in m0006's `preference_votes`,
where the feedback trainers read them.
"""

import sqlite3

from tunelab.stores.migrations import run_script


def migrate(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE comparisons (
            id INTEGER PRIMARY KEY,
            bank TEXT NOT NULL,
            config_key TEXT NOT NULL,
            config_json TEXT NOT NULL,
            arms_json TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'done')),
            report_dir TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX comparisons_by_key ON comparisons(config_key);
        CREATE TABLE comparison_items (
            comparison_id INTEGER NOT NULL REFERENCES comparisons(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            item_key TEXT NOT NULL,
            input TEXT NOT NULL,
            reference TEXT NOT NULL,
            PRIMARY KEY (comparison_id, position)
        );
        CREATE TABLE comparison_results (
            comparison_id INTEGER NOT NULL,
            arm TEXT NOT NULL,
            position INTEGER NOT NULL,
            arm_fingerprint TEXT NOT NULL,
            output TEXT NOT NULL,
            scores_json TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            ttft_ms REAL,
            total_ms REAL NOT NULL,
            decode_tps REAL,
            finish_reason TEXT NOT NULL,
            examples_json TEXT NOT NULL DEFAULT '[]',
            provenance_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            PRIMARY KEY (comparison_id, arm, position),
            FOREIGN KEY (comparison_id, position) REFERENCES comparison_items(comparison_id, position) ON DELETE CASCADE
        )
        """,
    )
