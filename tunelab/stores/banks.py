"""Example banks in SQLite: import, deduplicate, split once, list, export, delete.

The train/test split is drawn once, seeded, when examples arrive, and stored per example:
every later reader (ICL pools, training, comparison) sees the same split, and only the train
split is ever handed out as a pool (`examples(name, "train")`).
"""

from __future__ import annotations

import builtins
import hashlib
import random
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from tunelab.errors import TunelabError
from tunelab.faults import pause_point
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.db import now, transaction

SPLITS = ("train", "test")
DEFAULT_TEST_SIZE = 0.2
MAX_LABELS = 20
"""Outputs drawn from at most this many distinct values (each used at least twice) are labels."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Example:
    id: int
    input: str
    output: str
    split: str


@dataclass(frozen=True)
class Bank:
    id: int
    name: str
    instruction: str
    test_size: float
    seed: int
    source: str
    created_at: str
    n_train: int
    n_test: int
    labels: tuple[str, ...]
    """The label set when outputs are class labels (sentiment, intent), else empty."""


@dataclass(frozen=True)
class ImportResult:
    bank: Bank
    added: int
    duplicates: int
    added_test: int


def content_hash(text: str, output: str) -> str:
    return hashlib.sha256(f"{text}\x1f{output}".encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise TunelabError(f"bad bank name {name!r}: use letters, digits, '.', '_' or '-' (up to 63 characters)")
    return name


def check_test_size(test_size: float) -> float:
    if not 0.0 <= test_size < 1.0:
        raise TunelabError(f"--test-size must be in [0, 1) (got {test_size})")
    return test_size


class BankStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def list(self) -> list[Bank]:
        rows = self.conn.execute("SELECT * FROM banks ORDER BY name").fetchall()
        return [self._bank(row) for row in rows]

    def names(self) -> builtins.list[str]:
        return [name for (name,) in self.conn.execute("SELECT name FROM banks ORDER BY name")]

    def get(self, name: str) -> Bank:
        row = self.conn.execute("SELECT * FROM banks WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = ", ".join(self.names()) or "none yet: `tunelab bank import-demo sentiment`"
            raise TunelabError(f"unknown bank {name!r} (banks: {known})")
        return self._bank(row)

    def exists(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM banks WHERE name = ?", (name,)).fetchone() is not None

    def examples(self, name: str, split: str | None = None) -> builtins.list[Example]:
        """The bank's examples in id order; `split` = "train" for an ICL pool or training set."""
        if split is not None and split not in SPLITS:
            raise TunelabError(f"unknown split {split!r} (train or test)")
        bank = self.get(name)
        query = "SELECT id, input, output, split FROM examples WHERE bank_id = ?"
        args: tuple[object, ...] = (bank.id,)
        if split is not None:
            query, args = query + " AND split = ?", (bank.id, split)
        return [Example(*row) for row in self.conn.execute(query + " ORDER BY id", args)]

    def create(
        self,
        name: str,
        rows: Sequence[ExampleRow],
        instruction: str = "",
        test_size: float = DEFAULT_TEST_SIZE,
        seed: int = 0,
        source: str = "",
    ) -> ImportResult:
        """A new bank with `rows`, all in one transaction: a failure leaves no half-imported bank."""
        check_name(name)
        check_test_size(test_size)
        if self.exists(name):
            raise TunelabError(f"bank {name!r} already exists: add to it with `tunelab bank add {name} FILE` or pick another name")
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO banks (name, instruction, test_size, seed, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, instruction.strip(), test_size, seed, source, now()),
            )
            result = self.insert(name, rows)
            pause_point("bank.import_inserted")
            return result

    def add(self, name: str, rows: Sequence[ExampleRow]) -> ImportResult:
        """Add rows to an existing bank; existing examples keep their split."""
        self.get(name)
        with transaction(self.conn):
            return self.insert(name, rows)

    def set_instruction(self, name: str, instruction: str) -> Bank:
        with transaction(self.conn):
            self.conn.execute("UPDATE banks SET instruction = ? WHERE id = ?", (instruction.strip(), self.get(name).id))
        return self.get(name)

    def example_id(self, name: str, row: ExampleRow) -> int:
        """The id of the example holding `row`'s content (new, or the earlier duplicate it matched)."""
        found = self.conn.execute(
            "SELECT id FROM examples WHERE bank_id = ? AND content_hash = ?", (self.get(name).id, content_hash(row.input, row.output))
        ).fetchone()
        if found is None:
            raise TunelabError(f"bank {name!r} holds no example {row.input[:40]!r}")
        return int(found[0])

    def delete(self, name: str) -> None:
        bank = self.get(name)
        with transaction(self.conn):
            self.conn.execute("DELETE FROM banks WHERE id = ?", (bank.id,))

    def insert(self, name: str, rows: Sequence[ExampleRow]) -> ImportResult:
        """Add rows inside the caller's transaction (`add` opens its own): a distilled answer is
        written together with its distillation record, or not at all."""
        bank = self.get(name)
        known = {h for (h,) in self.conn.execute("SELECT content_hash FROM examples WHERE bank_id = ?", (bank.id,))}
        fresh: list[tuple[ExampleRow, str]] = []
        for row in rows:
            digest = content_hash(row.input, row.output)
            if digest not in known:
                known.add(digest)
                fresh.append((row, digest))
        test = self._test_positions(bank, len(fresh))
        created = now()
        self.conn.executemany(
            "INSERT INTO examples (bank_id, input, output, split, content_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(bank.id, row.input, row.output, "test" if i in test else "train", digest, created) for i, (row, digest) in enumerate(fresh)],
        )
        return ImportResult(self.get(name), len(fresh), len(rows) - len(fresh), len(test))

    def _test_positions(self, bank: Bank, n_new: int) -> set[int]:
        """Which of the new rows go to test: enough to bring the bank to its test share, drawn
        with the bank's seed (and the current size, so successive additions draw differently)."""
        total = bank.n_train + bank.n_test + n_new
        want = min(n_new, max(0, round(total * bank.test_size) - bank.n_test))
        rng = random.Random(f"{bank.seed}:{bank.n_train + bank.n_test}")
        return set(rng.sample(range(n_new), want))

    def _bank(self, row: sqlite3.Row) -> Bank:
        counts = dict(self.conn.execute("SELECT split, COUNT(*) FROM examples WHERE bank_id = ? GROUP BY split", (row["id"],)).fetchall())
        return Bank(
            row["id"],
            row["name"],
            row["instruction"],
            row["test_size"],
            row["seed"],
            row["source"],
            row["created_at"],
            counts.get("train", 0),
            counts.get("test", 0),
            self._labels(row["id"]),
        )

    def _labels(self, bank_id: int) -> tuple[str, ...]:
        rows = self.conn.execute(
            "SELECT output, COUNT(*) FROM examples WHERE bank_id = ? GROUP BY output LIMIT ?", (bank_id, MAX_LABELS + 1)
        ).fetchall()
        if len(rows) > MAX_LABELS or len(rows) < 2 or any(n < 2 for _, n in rows):
            return ()
        return tuple(sorted(output for output, _ in rows))
