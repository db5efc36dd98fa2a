"""Killing the real `tunelab` CLI at a named point (SIGKILL: no cleanup runs) and checking the data after.

`kill_at` starts the command with TUNELAB_FAULT_PAUSE=<point>; `tunelab.faults.pause_point` prints
a marker and blocks there, the test SIGKILLs the process on seeing it. `checked_db` then opens
the database the way a fresh process would and asserts `PRAGMA integrity_check` is ok.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from tunelab.faults import ENV, MARKER

TUNELAB = [sys.executable, "-m", "tunelab.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([*TUNELAB, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, **kwargs)


def ok(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


def kill_at(point: str, *args: str, timeout: float = 300, command: list[str] | None = None, env: dict[str, str] | None = None) -> str:
    """Run `tunelab ARGS` (or `command`) until it reaches `point`, SIGKILL it there; returns its stderr so far.

    The kill takes the processes the command started too: an `accelerate launch` and its training
    processes (torch's launcher starts each in a session of its own) die together."""
    proc = subprocess.Popen(
        command or [*TUNELAB, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {}), ENV: point},
    )
    seen: list[str] = []
    reached = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if line.startswith(f"{MARKER} {point}"):
                reached.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reached.wait(timeout)
    finished = proc.poll() is not None
    started = [] if finished else psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    for child in started:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.wait()
    psutil.wait_procs(started, timeout=30)
    assert reached.is_set(), f"never reached {point} (exited: {finished}): {''.join(seen)[-2000:]}"
    return "".join(seen)


def checked_db(home: Path) -> sqlite3.Connection:
    """The data dir's database, checked intact (the first check after every kill)."""
    conn = sqlite3.connect(home / "tunelab.db")
    conn.row_factory = sqlite3.Row
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    return conn


def count(conn: sqlite3.Connection, table: str, where: str = "1", *args: object) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", args).fetchone()[0]
