"""Schema migrations, one module each, applied in name order and recorded in `_migrations`.

A shipped migration is never edited: change the schema by adding the next module
(`mNNNN_what.py` with a `migrate(conn)` function). Numbers are reserved per feature so parallel
work does not collide: 0001-0002 chat, 0003 banks, 0004 training runs, 0005 comparisons,
0006 feedback, 0007 message search, 0008 run liveness, 0009 learning curves, 0010 training stages,
0011 typed provenance, 0016 distillation.
"""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[sqlite3.Connection], None]


def all_migrations() -> list[Migration]:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("m"))
    return [Migration(n, importlib.import_module(f"{__name__}.{n}").migrate) for n in names]


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run DDL statements one by one: `executescript` would COMMIT the migration's transaction."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
