"""The SQLite database: opening it (WAL, foreign keys) and bringing its schema up to date."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.stores.migrations import Migration, all_migrations

BUSY_TIMEOUT_S = 60.0
"""How long a write waits for another process's transaction before giving up."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def ensure_dir(path: Path) -> Path:
    """Create the data dir (or a folder in it) and check it is writable, with a one-line error.

    Created readable by its owner only (0700): it holds prompts, replies and ratings."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")  # one per process: several may start at once
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TunelabError(f"data dir {path} is not usable: {exc.strerror or exc}") from None
    return path


def connect(path: Path, migrations: list[Migration] | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the database and apply pending migrations.

    `check_same_thread=False` because the TUI writes replies from a worker thread; every write
    goes through `transaction`, and SQLite serialises them. Several processes (8 `tunelab chat`s,
    the TUI and the CLI) share one file: WAL lets readers run beside the writer, and a writer
    waits up to `BUSY_TIMEOUT_S` for another's transaction instead of failing with "locked".
    A damaged file is never written to: the error says to move it aside.
    """
    ensure_dir(path.parent)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, all_migrations() if migrations is None else migrations)
    except sqlite3.OperationalError as exc:  # cannot open, locked too long, disk full: the file is fine
        raise TunelabError(f"cannot open database {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "disk image is malformed"
        raise TunelabError(f"database {path} is damaged ({exc}); tunelab left it untouched: move it aside "
                           f"(mv {path} {path}.damaged) to start an empty one, or restore it from a backup") from None
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: nothing is half-written."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite already rolled back after some errors (a full disk, an I/O error)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]


def migrate(conn: sqlite3.Connection, migrations: list[Migration]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = set(applied_migrations(conn))
    for migration in migrations:
        if migration.name in done:
            continue
        with transaction(conn):
            # another process opening the same new data dir may have applied it while we waited
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (migration.name,)).fetchone():
                continue
            migration.apply(conn)
            conn.execute("INSERT INTO _migrations VALUES (?, ?)", (migration.name, now()))
