"""The held-out items a comparison answers, and the checks that no arm has seen them.

A test set is a bank's test split or a file with the bank's fields; both are checked against the
bank's train split for duplicate inputs (a warning: ICL arms may copy the answer). Leakage is a
refusal instead: a test id in the ICL pool or in an adapter's training data (directly, or as the
source of a distilled example it was trained on) would score an arm on what it memorised.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.eval.metrics import normalize
from tunelab.stores.bank_files import read_examples
from tunelab.stores.comparisons import ComparisonItem
from tunelab.stores.distillations import DistillationStore
from tunelab.stores.runs import adapter_training_ids

if TYPE_CHECKING:
    from tunelab.runtime.arm_runner import ArmRunner
    from tunelab.stores.banks import Bank, BankStore


@dataclass
class TestSet:
    """Held-out items for one bank, with where they came from and what looked suspicious."""

    bank: str
    items: list[ComparisonItem]
    source: str
    warnings: list[str] = field(default_factory=list)


def bank_store(conn: sqlite3.Connection) -> BankStore:
    """The example banks, imported on use so the report viewer and `--help` don't load the ICL stack."""
    from tunelab.stores.banks import BankStore

    return BankStore(conn)


def list_banks(conn: sqlite3.Connection) -> list[str]:
    return [bank.name for bank in bank_store(conn).list()]


def open_bank(conn: sqlite3.Connection, name: str) -> Bank:
    """The bank, or a one-line error naming the ones that exist."""
    return bank_store(conn).get(name)


def bank_test_set(conn: sqlite3.Connection, bank: Bank, limit: int | None = None) -> TestSet:
    """The bank's held-out split (first `limit` items in the bank's stored order)."""
    store = bank_store(conn)
    test = store.examples(bank.name, split="test")[: limit if limit is not None else None]
    items = [ComparisonItem(i, str(e.id), e.input, e.output) for i, e in enumerate(test)]
    train = [e.input for e in store.examples(bank.name, split="train")]
    return TestSet(bank.name, items, f"bank {bank.name!r} test split", duplicate_warnings(items, train, "the bank's train split"))


def file_test_set(conn: sqlite3.Connection, bank: Bank, path: Path, limit: int | None = None) -> TestSet:
    """Items from a JSONL/CSV file with the same fields as a bank, checked against the bank's train data."""
    parsed = read_examples(path)
    rows = parsed.rows[: limit if limit is not None else None]
    items = [ComparisonItem(i, f"file:{r.line}", r.input, r.output) for i, r in enumerate(rows)]
    train = [e.input for e in bank_store(conn).examples(bank.name, split="train")]
    skipped = [f"{len(parsed.skipped)} line(s) of {path} skipped: {parsed.skipped_summary()}"] if parsed.skipped else []
    return TestSet(bank.name, items, f"file {path}", skipped + duplicate_warnings(items, train, f"bank {bank.name!r}'s train split"))


def duplicates(items: Sequence[ComparisonItem], train_inputs: Sequence[str]) -> list[ComparisonItem]:
    """Test items whose input also appears (after normalisation) in the training data."""
    seen = {normalize(text) for text in train_inputs}
    return [item for item in items if normalize(item.input) in seen]


def duplicate_warnings(items: Sequence[ComparisonItem], train_inputs: Sequence[str], where: str) -> list[str]:
    dupes = duplicates(items, train_inputs)
    if not dupes:
        return []
    shown = ", ".join(d.key for d in dupes[:5]) + (" ..." if len(dupes) > 5 else "")
    return [
        f"{len(dupes)} of {len(items)} test items also appear in {where} ({shown}): ICL arms may copy the answer, scores are optimistic"
    ]


def check_leakage(runner: ArmRunner, test_set: TestSet, arms: Sequence[Arm]) -> None:
    """Refuse to score an arm on items it has seen: test ids in the ICL pool or an adapter's training data.

    An adapter trained on a distilled bank saw its source examples' inputs: those ids count as
    seen too, and (for inputs read from a file) so does any test item with the same input."""
    conn, bank = runner.conn, runner.bank
    keys = {item.key for item in test_set.items}
    pool = {str(e.id) for e in bank_store(conn).examples(bank.name, split="train")}
    if leaked := keys & pool:
        raise TunelabError(f"{len(leaked)} test item(s) are in bank {bank.name!r}'s ICL pool: the split is broken")
    for adapter in sorted({a.adapter for a in arms if a.adapter}):
        trained = adapter_training_ids(conn, adapter)
        origins = DistillationStore(conn).origins({i for i in trained if isinstance(i, int)})
        seen = {str(i) for i in trained} | {str(o.source_example_id) for o in origins if o.source_example_id is not None}
        inputs = {normalize(o.input) for o in origins if o.source_example_id is None}
        if leaked := (keys & seen) | {item.key for item in test_set.items if normalize(item.input) in inputs}:
            through = " (as the inputs of the distilled bank it was trained on)" if origins else ""
            raise TunelabError(
                f"adapter {adapter!r} was trained on {len(leaked)} of the test items{through}: compare it on another bank or test file"
            )
