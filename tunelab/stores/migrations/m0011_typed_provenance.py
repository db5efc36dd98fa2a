"""Every stored provenance in the one shape of `stores.provenance.Provenance`.

Chat replies kept the model, adapter, sampler and seed in columns and only the ICL part in JSON;
compare results kept the examples flat (`example_ids`, `example_scores`). Both are rewritten into
the shared record, so readers see the same fields wherever a reply came from. The columns stay
(they are indexed and listed), and the rewrite reads them for the old rows.
"""

import json
import sqlite3

from tunelab.stores.provenance import Provenance


def _rewrite(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], where: str = "1") -> None:
    rows = conn.execute(f"SELECT rowid, provenance_json, {', '.join(columns)} FROM {table} WHERE {where}").fetchall()
    for row in rows:
        old = json.loads(row[1] or "{}")
        known = dict(zip(columns, row[2:]))
        if "params_json" in known:
            known["params"] = json.loads(known.pop("params_json") or "{}")
        record = Provenance.from_dict(old, **known).to_dict()
        conn.execute(
            f"UPDATE {table} SET provenance_json = ? WHERE rowid = ?", (json.dumps(record, ensure_ascii=False, sort_keys=True), row[0])
        )


def migrate(conn: sqlite3.Connection) -> None:
    _rewrite(conn, "messages", ("model_path", "model_sha256", "adapter", "params_json", "seed"), "role = 'assistant'")
    _rewrite(conn, "comparison_results", ("arm",))
    _rewrite(conn, "ratings", ("model_path", "model_sha256", "adapter", "arm", "params_json"))
