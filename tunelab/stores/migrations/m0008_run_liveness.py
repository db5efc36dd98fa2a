"""Which process owns a run: pid, its start time and host, and a heartbeat.

A run killed with SIGKILL (or by a power cut, or the OOM killer) never writes its own end, so
its row stays `running`; with these columns a reader can tell that its process is gone and show
it as `interrupted` (resumable, restartable or deletable) instead.
"""

import sqlite3

from tunelab.stores.migrations import run_script


def migrate(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE runs ADD COLUMN proc_start TEXT NOT NULL DEFAULT '';
        ALTER TABLE runs ADD COLUMN host TEXT NOT NULL DEFAULT '';
        ALTER TABLE runs ADD COLUMN heartbeat_at TEXT
        """,
    )
