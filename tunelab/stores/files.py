"""Files under the data dir: atomic writes and a cached content hash for model files."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunelab.stores import liveness
from tunelab.stores.db import transaction

TEMP_SUFFIX = ".tmp"


def temp_prefix(final: Path) -> str:
    """`.<name>.<pid>-<start time>.`: a temp file or folder names the process writing it, so
    `stale_temps` can remove what a killed process left without touching a live writer's."""
    me = liveness.current()
    return f".{final.name}.{me.pid}-{me.start}."


def stale_temps(folder: Path) -> list[Path]:
    """Temp files/folders directly in `folder` whose writing process is gone."""
    found = []
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        parts = path.name[: -len(TEMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or "-" not in parts[1] or not parts[1].split("-")[0].isdigit():
            continue
        pid, start = parts[1].split("-", 1)
        if not liveness.alive(liveness.ProcessId(int(pid), start, liveness.current().host), None):
            found.append(path)
    return found


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path` for any writer (text, a GGUFWriter, a copy); on success it
    is synced to disk and renamed onto `path`, else removed.

    Readers see the old file or the whole new one, never a part: a GGUF is written in several
    passes, and a crash or a full disk halfway must not leave a file llama.cpp would try to load.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data reaches the disk before the rename makes it the file
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`text` as the whole content of `path`, written through `atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_jsonl(path: Path, rows: list[Any]) -> None:
    """One JSON value per line, written atomically (the training rows a run is frozen with)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[Any]:
    """What `write_jsonl` wrote; [] when the file is missing."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it is renamed to `final`, else removed.

    Used for adapters and reports, which are registered only once completely written.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_prefix(final), suffix=TEMP_SUFFIX))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing): a second process blocks here until the first is done.

    The kernel drops the lock when its holder dies, so a killed process never leaves it stuck."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(conn: sqlite3.Connection, path: Path) -> str:
    """sha256 of a file, recomputed only when its size or mtime changed."""
    path = path.resolve()
    st = path.stat()
    row = conn.execute("SELECT size, mtime_ns, sha256 FROM file_hashes WHERE path = ?", (str(path),)).fetchone()
    if row and row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns:
        return row["sha256"]
    digest = sha256_file(path)
    with transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)",
            (str(path), st.st_size, st.st_mtime_ns, digest),
        )
    return digest
