"""Distillation: a teacher's answers to unlabelled inputs, stored one by one as bank examples.

`distillations` is one job (target bank, teacher arm, where the inputs came from, the settings
that decide the answers); `distilled_examples` one answered input, written in the same
transaction as the bank example it became, so a killed job resumes at the next input. The
`source_example_id` of an input taken from another bank's train split is what lets the compare
leakage guard see through a distilled bank to the examples its inputs came from.
"""

import sqlite3

from tunelab.stores.migrations import run_script


def migrate(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE distillations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            bank_id INTEGER NOT NULL REFERENCES banks(id) ON DELETE CASCADE,
            teacher TEXT NOT NULL,
            context_bank TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            config_json TEXT NOT NULL,
            total INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'done')),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (bank_id, fingerprint)
        );
        CREATE TABLE distilled_examples (
            distillation_id INTEGER NOT NULL REFERENCES distillations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            source_key TEXT NOT NULL,
            source_example_id INTEGER,
            example_id INTEGER NOT NULL REFERENCES examples(id) ON DELETE CASCADE,
            reply TEXT NOT NULL,
            provenance_json TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (distillation_id, position)
        );
        CREATE INDEX distilled_examples_example ON distilled_examples (example_id)
        """,
    )
