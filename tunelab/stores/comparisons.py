"""Comparisons in SQLite: their setup, held-out items and every (arm, item) result.

A comparison is identified by its `config_key` (bank, model, sampler, test items, prompt
format): running `tunelab compare` again with the same setup finds it and reuses every
(arm, item) already finished. Arms are not part of the key, so adding an arm to a finished
comparison only generates the new arm.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.stores.db import now, transaction
from tunelab.stores.trash import delete_with_files


@dataclass
class Comparison:
    id: int
    bank: str
    config_key: str
    config: dict[str, Any]
    arms: list[str]
    status: str
    report_dir: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class ComparisonItem:
    """One held-out test item: `key` is the bank example id, or `file:<line>` for a test file."""

    position: int
    key: str
    input: str
    reference: str


@dataclass
class ItemResult:
    """One arm's reply to one item, scored, with the examples it was shown and how it was made."""

    arm: str
    position: int
    output: str
    scores: dict[str, float]
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    total_ms: float
    decode_tps: float | None
    finish_reason: str
    examples: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _comparison(row: sqlite3.Row) -> Comparison:
    return Comparison(
        id=row["id"],
        bank=row["bank"],
        config_key=row["config_key"],
        config=json.loads(row["config_json"]),
        arms=json.loads(row["arms_json"]),
        status=row["status"],
        report_dir=row["report_dir"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _result(row: sqlite3.Row) -> ItemResult:
    return ItemResult(
        arm=row["arm"],
        position=row["position"],
        output=row["output"],
        scores=json.loads(row["scores_json"]),
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        ttft_ms=row["ttft_ms"],
        total_ms=row["total_ms"],
        decode_tps=row["decode_tps"],
        finish_reason=row["finish_reason"],
        examples=json.loads(row["examples_json"]),
        provenance=json.loads(row["provenance_json"]),
    )


class ComparisonStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def open(self, bank: str, config_key: str, config: dict[str, Any], items: Sequence[ComparisonItem], arms: Sequence[str]) -> Comparison:
        """The comparison with this exact setup (newest first), or a new one with its items."""
        row = self.conn.execute("SELECT * FROM comparisons WHERE config_key = ? ORDER BY id DESC LIMIT 1", (config_key,)).fetchone()
        stamp = now()
        with transaction(self.conn):
            if row is not None:
                self.conn.execute(
                    "UPDATE comparisons SET arms_json = ?, status = 'running', updated_at = ? WHERE id = ?",
                    (json.dumps(list(arms)), stamp, row["id"]),
                )
                comparison_id = row["id"]
            else:
                comparison_id = self.conn.execute(
                    "INSERT INTO comparisons (bank, config_key, config_json, arms_json, status, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, 'running', ?, ?)",
                    (bank, config_key, json.dumps(config, sort_keys=True), json.dumps(list(arms)), stamp, stamp),
                ).lastrowid
                self.conn.executemany(
                    "INSERT INTO comparison_items VALUES (?, ?, ?, ?, ?)",
                    [(comparison_id, i.position, i.key, i.input, i.reference) for i in items],
                )
        return self.get(comparison_id)

    def get(self, comparison_id: int) -> Comparison:
        row = self.conn.execute("SELECT * FROM comparisons WHERE id = ?", (comparison_id,)).fetchone()
        if row is None:
            raise TunelabError(f"no comparison {comparison_id} (see `tunelab reports`)")
        return _comparison(row)

    def list(self) -> list[Comparison]:
        return [_comparison(r) for r in self.conn.execute("SELECT * FROM comparisons ORDER BY id DESC")]

    def delete(self, comparison_id: int, report_dirs: Sequence[Path], home: Path) -> builtins.list[Path]:
        """Delete a comparison (items and answers with it) and its report folder(s); ratings of its
        outputs stay (they are snapshots)."""
        comparison = self.get(comparison_id)
        paths = [*report_dirs, *([Path(comparison.report_dir)] if comparison.report_dir else [])]
        return delete_with_files(
            self.conn,
            home,
            ("comparisons", "id", comparison_id),
            paths,
            lambda conn: conn.execute("DELETE FROM comparisons WHERE id = ?", (comparison_id,)),
        )

    def latest_done(self) -> Comparison | None:
        row = self.conn.execute("SELECT * FROM comparisons WHERE status = 'done' ORDER BY updated_at DESC, id DESC LIMIT 1").fetchone()
        return _comparison(row) if row else None

    def items(self, comparison_id: int) -> builtins.list[ComparisonItem]:
        rows = self.conn.execute("SELECT * FROM comparison_items WHERE comparison_id = ? ORDER BY position", (comparison_id,))
        return [ComparisonItem(r["position"], r["item_key"], r["input"], r["reference"]) for r in rows]

    def finished(self, comparison_id: int, arm: str, fingerprint: str) -> set[int]:
        """Positions this arm already answered with this exact setup; stale answers are deleted."""
        with transaction(self.conn):
            self.conn.execute(
                "DELETE FROM comparison_results WHERE comparison_id = ? AND arm = ? AND arm_fingerprint != ?",
                (comparison_id, arm, fingerprint),
            )
        rows = self.conn.execute("SELECT position FROM comparison_results WHERE comparison_id = ? AND arm = ?", (comparison_id, arm))
        return {r["position"] for r in rows}

    def add_result(self, comparison_id: int, fingerprint: str, result: ItemResult) -> None:
        with transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO comparison_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    comparison_id,
                    result.arm,
                    result.position,
                    fingerprint,
                    result.output,
                    json.dumps(result.scores),
                    result.prompt_tokens,
                    result.completion_tokens,
                    result.ttft_ms,
                    result.total_ms,
                    result.decode_tps,
                    result.finish_reason,
                    json.dumps(result.examples, ensure_ascii=False),
                    json.dumps(result.provenance, ensure_ascii=False, sort_keys=True),
                    now(),
                ),
            )

    def results(self, comparison_id: int, arms: Sequence[str] | None = None) -> builtins.list[ItemResult]:
        rows = self.conn.execute("SELECT * FROM comparison_results WHERE comparison_id = ? ORDER BY arm, position", (comparison_id,))
        wanted = set(arms) if arms is not None else None
        return [_result(r) for r in rows if wanted is None or r["arm"] in wanted]

    def finish(self, comparison_id: int, report_dir: str) -> Comparison:
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE comparisons SET status = 'done', report_dir = ?, updated_at = ? WHERE id = ?",
                (report_dir, now(), comparison_id),
            )
        return self.get(comparison_id)
