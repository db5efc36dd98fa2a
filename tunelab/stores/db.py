"""The SQLite database: opening it (WAL, foreign keys) and bringing its schema up to date."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.stores.migrations import Migration, all_migrations


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def ensure_dir(path: Path) -> Path:
    """Create the data dir (or a folder in it) and check it is writable, with a one-line error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TunelabError(f"data dir {path} is not usable: {exc.strerror or exc}") from None
    return path


def connect(path: Path, migrations: list[Migration] | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the database and apply pending migrations.

    `check_same_thread=False` because the TUI writes replies from a worker thread; every write
    goes through `transaction`, and SQLite serialises them.
    """
    ensure_dir(path.parent)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, all_migrations() if migrations is None else migrations)
    except sqlite3.DatabaseError as exc:
        raise TunelabError(f"cannot open database {path}: {exc}") from None
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: nothing is half-written."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
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
            migration.apply(conn)
            conn.execute("INSERT INTO _migrations VALUES (?, ?)", (migration.name, now()))
