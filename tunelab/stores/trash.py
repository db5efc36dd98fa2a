"""Deleting records that own files, so that no row ever points at nothing and no file is orphaned.

`delete_with_files` writes a manifest, renames every file/folder to a trash name beside it, deletes
the rows in one transaction, then removes the trash. A process killed anywhere in between is
repaired by `sweep` (run when the database is opened): if the row is still there the files go
back under their own names, otherwise the trash is removed. One helper for every kind of record
(adapters, training / feedback runs, reward models, comparisons).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from tunelab.config import DataDir
from tunelab.faults import pause_point
from tunelab.stores.db import transaction
from tunelab.stores.files import atomic_write_text, stale_temps


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def delete_with_files(
    conn: sqlite3.Connection,
    home: Path,
    owner: tuple[str, str, object],
    paths: Iterable[Path],
    delete_rows: Callable[[sqlite3.Connection], object],
) -> list[Path]:
    """Delete the rows (`delete_rows`, inside one transaction) and `paths`; returns the paths removed.

    `owner` is (table, key column, key) of the main row: `sweep` checks it to know which way an
    interrupted deletion goes.
    """
    token = uuid.uuid4().hex[:12]
    unique = list(dict.fromkeys(Path(p) for p in paths))
    outermost = [p for p in unique if not any(q in p.parents for q in unique)]  # a folder's files move with it
    moves = [(p, p.with_name(f".{p.name}.trash-{token}")) for p in outermost if p.exists() or p.is_symlink()]
    manifest = DataDir(Path(home)).trash / f"{token}.json"
    table, column, key = owner
    atomic_write_text(manifest, json.dumps({"table": table, "column": column, "key": key, "moves": [[str(a), str(b)] for a, b in moves]}))
    try:
        for original, trashed in moves:
            os.replace(original, trashed)
        pause_point("delete.files_moved")
        with transaction(conn):
            delete_rows(conn)
    except BaseException:
        _restore(moves)
        manifest.unlink(missing_ok=True)
        raise
    for _, trashed in moves:
        _remove(trashed)
    manifest.unlink(missing_ok=True)
    return [original for original, _ in moves]


def _restore(moves: list[tuple[Path, Path]]) -> None:
    for original, trashed in moves:
        if (trashed.exists() or trashed.is_symlink()) and not original.exists():
            os.replace(trashed, original)


def sweep(conn: sqlite3.Connection, home: Path) -> int:
    """Finish or undo deletions a killed process left half done; returns how many it found."""
    folder = DataDir(Path(home)).trash
    if not folder.is_dir():
        return 0
    found = 0
    for manifest in sorted(folder.glob("*.json")):
        found += 1
        try:
            spec = json.loads(manifest.read_text(encoding="utf-8"))
            table, column = str(spec["table"]), str(spec["column"])
            if not (table.isidentifier() and column.isidentifier()):
                raise ValueError(table)
            moves = [(Path(a), Path(b)) for a, b in spec["moves"]]
        except (OSError, ValueError, KeyError, TypeError):
            manifest.unlink(missing_ok=True)  # unreadable: written before any file was moved
            continue
        if conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (spec["key"],)).fetchone():
            _restore(moves)
        else:
            for _, trashed in moves:
                _remove(trashed)
        manifest.unlink(missing_ok=True)
    return found


def sweep_temps(home: Path) -> list[Path]:
    """Remove the temp files and folders that killed writers left in the data dir (two levels deep:
    `adapters/.x.tmp`, `adapters/NAME/.merged.gguf.tmp`, `models/...`); live writers' are kept."""
    home = Path(home)
    dirs = DataDir(home)
    folders = [home, *(d for d in home.iterdir() if d.is_dir() and d not in (dirs.chroma, dirs.chroma_damaged))] if home.is_dir() else []
    folders += [sub for d in folders[1:] for sub in d.iterdir() if sub.is_dir() and not sub.name.startswith(".")]
    removed = [path for folder in folders for path in stale_temps(folder)]
    for path in removed:
        _remove(path)
    return removed
