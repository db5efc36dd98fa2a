"""The SQLite database: opening it (WAL, foreign keys) and bringing its schema up to date."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.errors import TunelabError
from tunelab.stores.migrations import Migration, all_migrations

if TYPE_CHECKING:
    from sqlite3 import _Parameters  # the stubs' name for what execute() takes; not importable at run time

BUSY_TIMEOUT_S = 60.0
"""How long a write waits for another process's transaction before giving up."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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


class SharedConnection(sqlite3.Connection):
    """A connection several threads of one process use, with one re-entrant lock around every
    statement and every transaction.

    The TUI saves a reply from a worker thread while the UI thread rates another. One SQLite
    connection has one transaction: without the lock, the UI thread's statement would run inside
    the worker's open `BEGIN IMMEDIATE` (committed or rolled back with it), or its own BEGIN would
    fail with "cannot start a transaction within a transaction". A thread holding the lock for a
    transaction makes the others wait until it commits; its own statements re-enter the lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # sqlite3.connect's own arguments
        super().__init__(*args, **kwargs)
        self.lock = threading.RLock()

    def execute(self, sql: str, parameters: _Parameters = (), /) -> sqlite3.Cursor:
        with self.lock:
            return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[_Parameters], /) -> sqlite3.Cursor:
        with self.lock:
            return super().executemany(sql, parameters)

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        with self.lock:
            return super().executescript(script)


def connect(path: Path, migrations: list[Migration] | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the database and apply pending migrations.

    `check_same_thread=False` because the TUI writes replies from a worker thread; the
    connection is a `SharedConnection`, whose lock keeps one thread's transaction from taking in
    another's statements. Several processes (8 `tunelab chat`s,
    the TUI and the CLI) share one file: WAL lets readers run beside the writer, and a writer
    waits up to `BUSY_TIMEOUT_S` for another's transaction instead of failing with "locked".
    A damaged file is never written to: the error says to move it aside.
    """
    ensure_dir(path.parent)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S, factory=SharedConnection)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, all_migrations() if migrations is None else migrations)
    except sqlite3.OperationalError as exc:  # cannot open, locked too long, disk full: the file is fine
        raise TunelabError(f"cannot open database {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "disk image is malformed"
        raise TunelabError(
            f"database {path} is damaged ({exc}); tunelab left it untouched: move it aside "
            f"(mv {path} {path}.damaged) to start an empty one, or restore it from a backup"
        ) from None
    return conn


NO_LOCK = contextlib.nullcontext()
"""A plain sqlite3 connection (opened without `connect`) is used by one thread: nothing to hold."""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: nothing is half-written.

    On a `SharedConnection` the calling thread holds the connection's lock from BEGIN to COMMIT,
    so no other thread's statement lands inside this transaction."""
    with getattr(conn, "lock", NO_LOCK):
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


def inserted_id(cur: sqlite3.Cursor) -> int:
    """The rowid of the row the INSERT run on `cur` wrote (`lastrowid` is None only before one)."""
    assert cur.lastrowid is not None
    return cur.lastrowid
