"""Distillation jobs and their answers (schema m0016): which teacher labelled which input of a bank.

A job is keyed by (target bank, fingerprint of everything that decides the answers), so the same
command run again finds its job and continues after the last stored answer. Each answer is
written as a bank example and a `distilled_examples` row in one transaction (`add_answer`).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from tunelab.errors import TunelabError
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore
from tunelab.stores.db import inserted_id, now, transaction


@dataclass(frozen=True)
class Distillation:
    id: int
    bank: str
    teacher: str
    """The teacher's arm name (`base+embedding@8`, `model:NAME`, `lora:NAME`)."""
    context_bank: str
    """The bank whose instruction the teacher was prompted with and whose train split its ICL examples came from."""
    source: str
    """Where the inputs came from: `bank NAME train split` or `file PATH`."""
    fingerprint: str
    config: dict[str, Any]
    total: int
    status: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class DistilledExample:
    """One bank example written by a teacher, and the source example its input came from (if any)."""

    example_id: int
    source_example_id: int | None
    input: str
    teacher: str
    context_bank: str


def _distillation(row: sqlite3.Row) -> Distillation:
    values = dict(row)
    values.pop("bank_id")
    return Distillation(bank=values.pop("bank_name"), config=json.loads(values.pop("config_json")), **values)


SELECT = "SELECT d.*, b.name AS bank_name FROM distillations d JOIN banks b ON b.id = d.bank_id"


class DistillationStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def open(
        self, bank: str, teacher: str, context_bank: str, source: str, fingerprint: str, config: dict[str, Any], total: int
    ) -> Distillation:
        """The job for this setup: the stored one (to resume) or a new one."""
        bank_id = BankStore(self.conn).get(bank).id
        with transaction(self.conn):
            found = self.conn.execute(
                "SELECT id FROM distillations WHERE bank_id = ? AND fingerprint = ?", (bank_id, fingerprint)
            ).fetchone()
            if found is not None:
                job_id = int(found[0])
            else:
                stamp = now()
                job_id = inserted_id(
                    self.conn.execute(
                        "INSERT INTO distillations (bank_id, teacher, context_bank, source, fingerprint, config_json, total, status,"
                        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                        (bank_id, teacher, context_bank, source, fingerprint, json.dumps(config), total, stamp, stamp),
                    )
                )
        return self.get(job_id)

    def get(self, job_id: int) -> Distillation:
        row = self.conn.execute(SELECT + " WHERE d.id = ?", (job_id,)).fetchone()
        if row is None:
            raise TunelabError(f"no distillation {job_id}")
        return _distillation(row)

    def list(self, bank: str | None = None) -> list[Distillation]:
        """Jobs, newest first (only those writing into `bank` when given)."""
        if bank is None:
            rows = self.conn.execute(SELECT + " ORDER BY d.id DESC").fetchall()
        else:
            rows = self.conn.execute(SELECT + " WHERE b.name = ? ORDER BY d.id DESC", (bank,)).fetchall()
        return [_distillation(r) for r in rows]

    def answered(self, job_id: int) -> set[int]:
        """Positions of the inputs already answered."""
        return {p for (p,) in self.conn.execute("SELECT position FROM distilled_examples WHERE distillation_id = ?", (job_id,))}

    def add_answer(
        self,
        job: Distillation,
        position: int,
        source_key: str,
        source_example_id: int | None,
        row: ExampleRow,
        reply: str,
        provenance: dict[str, Any],
    ) -> int:
        """Store one teacher answer as an example of the job's bank (`row`: its output read onto the
        labels), with the reply as generated and its provenance; the example's id."""
        store = BankStore(self.conn)
        with transaction(self.conn):
            store.insert(job.bank, [row])
            example_id = store.example_id(job.bank, row)
            self.conn.execute(
                "INSERT INTO distilled_examples VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, position, source_key, source_example_id, example_id, reply, json.dumps(provenance), now()),
            )
            self.conn.execute("UPDATE distillations SET updated_at = ? WHERE id = ?", (now(), job.id))
        return example_id

    def provenance(self, job_id: int) -> builtins.list[dict[str, Any]]:
        """Every stored answer's provenance record, in input order."""
        rows = self.conn.execute("SELECT provenance_json FROM distilled_examples WHERE distillation_id = ? ORDER BY position", (job_id,))
        return [json.loads(r[0]) for r in rows]

    def finish(self, job_id: int) -> Distillation:
        with transaction(self.conn):
            self.conn.execute("UPDATE distillations SET status = 'done', updated_at = ? WHERE id = ?", (now(), job_id))
        return self.get(job_id)

    def origins(self, example_ids: set[int]) -> builtins.list[DistilledExample]:
        """The distilled examples among `example_ids`: where their inputs came from and which teacher answered."""
        if not example_ids:
            return []
        rows = self.conn.execute(
            "SELECT x.example_id, x.source_example_id, e.input, d.teacher, d.context_bank FROM distilled_examples x"
            " JOIN examples e ON e.id = x.example_id JOIN distillations d ON d.id = x.distillation_id"
            " WHERE x.example_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(example_ids)),),
        ).fetchall()
        return [DistilledExample(*r) for r in rows]
