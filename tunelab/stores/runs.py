"""Training runs and finished adapters (schema m0004).

Runs move running -> done | failed | cancelled; `--resume` moves a failed or cancelled run back
to running. A `running` row whose process is gone (killed, power cut; see `liveness`) is read as
`interrupted`: it can be resumed, restarted from step 0 (`restart`) or deleted (`delete`).
Adapters are registered by `add_adapter` only after their files were renamed into place
(`atomic_dir`), so every listed adapter is complete.
"""

from __future__ import annotations

import builtins
import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from tunelab.config import DataDir
from tunelab.errors import TunelabError
from tunelab.stores import liveness
from tunelab.stores.db import now, transaction
from tunelab.stores.trash import delete_with_files

STATUSES = ("running", "done", "failed", "cancelled")
INTERRUPTED = "interrupted"
"""Read-only status: stored as `running`, but the process that ran it is gone."""
"""Folder (under the data dir) of the trained reward models, one per run name."""


class Timings(TypedDict, total=False):
    """What a training run measured, stored with its status (None: not measured on this device)."""

    train_seconds: float | None
    tokens_per_s: float | None
    peak_memory_mb: float | None


@dataclass
class Run:
    id: int
    name: str
    method: str
    base_gguf: str
    base_sha256: str
    hf_dir: str
    bank: str
    split: str
    example_ids: list[Any]
    args: dict[str, Any]
    status: str
    step: int
    total_steps: int
    loss_history: list[dict[str, float]]
    error: str
    device: str
    run_dir: str
    train_seconds: float
    tokens_per_s: float | None
    peak_memory_mb: float | None
    created_at: str
    updated_at: str
    finished_at: str | None
    pid: int | None = None
    proc_start: str = ""
    host: str = ""
    heartbeat_at: str | None = None

    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.run_dir) / "checkpoints"

    @property
    def last_checkpoint(self) -> Path | None:
        """The newest checkpoint in the run dir (the Trainer names them checkpoint-<step>)."""
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
        return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None

    @property
    def owner(self) -> str:
        return f"pid {self.pid} on {self.host}" if self.pid else "another process"


@dataclass
class Adapter:
    name: str
    run_id: int
    bank: str
    base_sha256: str
    peft_dir: str
    gguf_path: str
    metrics: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, str] = field(default_factory=dict)
    """Merged standalone GGUFs written later: tensor type (f16, q8_0) -> path."""
    created_at: str = ""


def _run(row: sqlite3.Row) -> Run:
    """A run as users see it: a `running` row whose process is gone reads as `interrupted`."""
    values = dict(row)
    for key in ("example_ids", "args", "loss_history"):
        values[key] = json.loads(values.pop(f"{key}_json"))
    run = Run(**values)
    owner = liveness.ProcessId(run.pid, run.proc_start, run.host) if run.pid is not None else None
    if run.status == "running" and owner is not None and not liveness.alive(owner, run.heartbeat_at):
        run.status = INTERRUPTED
    return run


def _adapter(row: sqlite3.Row) -> Adapter:
    values = dict(row)
    for key in ("metrics", "exports"):
        values[key] = json.loads(values.pop(f"{key}_json"))
    return Adapter(**values)


class RunStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def create(
        self,
        name: str,
        base_gguf: Path,
        base_sha256: str,
        hf_dir: Path,
        bank: str,
        example_ids: list[Any],
        args: dict[str, Any],
        run_dir: Path,
        device: str,
        method: str = "sft",
        command: str = "tunelab train",
    ) -> Run:
        """Record a new run (status running); `command` is the one that resumes it, named when the name is taken."""
        if self.conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone():
            raise TunelabError(
                f"a run named {name!r} exists: pick another name, continue it with `{command} --resume {name}`, "
                f"start it over with `{command} --restart {name}`, or delete it (`tunelab adapters delete {name}`)"
            )
        stamp = now()
        me = liveness.current()
        with transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO runs (name, method, base_gguf, base_sha256, hf_dir, bank, example_ids_json, args_json, status,"
                " device, run_dir, created_at, updated_at, pid, proc_start, host, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    method,
                    str(base_gguf),
                    base_sha256,
                    str(hf_dir),
                    bank,
                    json.dumps(example_ids),
                    json.dumps(args),
                    device,
                    str(run_dir),
                    stamp,
                    stamp,
                    me.pid,
                    me.start,
                    me.host,
                    stamp,
                ),
            )
        return self.get(str(cur.lastrowid))

    def check_stopped(self, run: Run, doing: str) -> None:
        """Refuse to `doing` a run whose process still trains it."""
        if run.status == "running":
            raise TunelabError(f"run {run.name!r} is still training ({run.owner}): stop it first (Ctrl-C there), then {doing} it")

    def restart(self, run_id: int) -> Run:
        """Back to step 0 under the same name and settings: history, timings and checkpoints cleared."""
        run = self.get(str(run_id))
        self.check_stopped(run, "restart")
        if run.status == "done":
            raise TunelabError(f"run {run.name!r} is done: delete it first (`tunelab adapters delete {run.name}`) to train it again")
        shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE runs SET step = 0, total_steps = 0, loss_history_json = '[]', error = '', train_seconds = 0,"
                " tokens_per_s = NULL, peak_memory_mb = NULL WHERE id = ?",
                (run_id,),
            )
        self.set_status(run_id, "running")
        return self.get(str(run_id))

    def delete(self, key: str, home: Path) -> list[Path]:
        """Delete a run that is not training, its adapter or reward model, and all their files."""
        run = self.get(key)
        self.check_stopped(run, "delete")
        dirs = DataDir(Path(home))
        paths = [Path(run.run_dir), dirs.adapters / run.name, dirs.reward_models / run.name]
        for adapter in self.conn.execute("SELECT * FROM adapters WHERE run_id = ?", (run.id,)):
            found = _adapter(adapter)
            paths += [Path(found.peft_dir), Path(found.gguf_path), *map(Path, found.exports.values())]

        def rows(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM adapters WHERE run_id = ?", (run.id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run.id,))

        return delete_with_files(self.conn, home, ("runs", "id", run.id), paths, rows)

    def get(self, key: str) -> Run:
        """A run by name, or by id when `key` is all digits."""
        column = "id" if key.isdigit() else "name"
        row = self.conn.execute(f"SELECT * FROM runs WHERE {column} = ?", (int(key) if key.isdigit() else key,)).fetchone()
        if row is None:
            raise TunelabError(f"no training run {key!r} (see `tunelab adapters runs`)")
        return _run(row)

    def list(self) -> list[Run]:
        return [_run(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY id DESC")]

    def progress(self, run_id: int, step: int, total: int, loss_history: builtins.list[dict[str, float]]) -> None:
        """Record a step; also the run's heartbeat."""
        stamp = now()
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE runs SET step = ?, total_steps = ?, loss_history_json = ?, updated_at = ?, heartbeat_at = ? WHERE id = ?",
                (step, total, json.dumps(loss_history), stamp, stamp, run_id),
            )

    def set_status(self, run_id: int, status: str, error: str = "", **timings: Unpack[Timings]) -> None:
        """Move a run to `status`; `timings` are train_seconds / tokens_per_s / peak_memory_mb."""
        if status not in STATUSES:
            raise ValueError(status)
        unknown = set(timings) - {"train_seconds", "tokens_per_s", "peak_memory_mb"}
        if unknown:
            raise ValueError(unknown)
        values: dict[str, Any] = dict(timings)
        if status == "running":  # this process owns it now (a resumed run may have died in another)
            me = liveness.current()
            values.update(pid=me.pid, proc_start=me.start, host=me.host, heartbeat_at=now())
        sets = "".join(f", {k} = ?" for k in values)
        finished = now() if status != "running" else None
        with transaction(self.conn):
            self.conn.execute(
                f"UPDATE runs SET status = ?, error = ?, updated_at = ?, finished_at = ?{sets} WHERE id = ?",
                (status, error, now(), finished, *values.values(), run_id),
            )

    def add_adapter(self, adapter: Adapter) -> Adapter:
        """Register a completely written adapter and mark its run done, in one transaction."""
        adapter.created_at = adapter.created_at or now()
        with transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO adapters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    adapter.name,
                    adapter.run_id,
                    adapter.bank,
                    adapter.base_sha256,
                    adapter.peft_dir,
                    adapter.gguf_path,
                    json.dumps(adapter.metrics),
                    json.dumps(adapter.exports),
                    adapter.created_at,
                ),
            )
            self.conn.execute(
                "UPDATE runs SET status = 'done', error = '', updated_at = ?, finished_at = ? WHERE id = ?", (now(), now(), adapter.run_id)
            )
        return adapter

    def set_export(self, name: str, tensor_type: str, path: Path) -> None:
        adapter = self.adapter(name)
        adapter.exports[tensor_type] = str(path)
        with transaction(self.conn):
            self.conn.execute("UPDATE adapters SET exports_json = ? WHERE name = ?", (json.dumps(adapter.exports), name))

    def adapter(self, name: str) -> Adapter:
        row = self.conn.execute("SELECT * FROM adapters WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise TunelabError(f"no adapter named {name!r} (see `tunelab adapters`)")
        return _adapter(row)

    def adapters(self) -> builtins.list[Adapter]:
        return [_adapter(r) for r in self.conn.execute("SELECT * FROM adapters ORDER BY created_at DESC")]


def adapter_gguf(conn: sqlite3.Connection, name: str) -> Path:
    """The llama.cpp file of a registered adapter (the thing `--adapter NAME` loads)."""
    path = Path(RunStore(conn).adapter(name).gguf_path)
    if not path.is_file():
        raise TunelabError(f"adapter {name!r} is registered but its file is missing: {path}")
    return path


def adapter_training_ids(conn: sqlite3.Connection, name: str) -> set[Any]:
    """Ids of the bank examples the adapter was trained on (the compare leakage guard)."""
    adapter = RunStore(conn).adapter(name)
    return set(RunStore(conn).get(str(adapter.run_id)).example_ids)


def latest_adapter_for_bank(conn: sqlite3.Connection, bank: str) -> str | None:
    row = conn.execute("SELECT name FROM adapters WHERE bank = ? ORDER BY created_at DESC LIMIT 1", (bank,)).fetchone()
    return row["name"] if row else None


def reward_models(conn: sqlite3.Connection, base_sha256: str | None = None) -> list[Run]:
    """Finished reward models, newest first (only those trained on `base_sha256` when given).

    The runs whose method column is `reward` (`finetune.methods`' one reward-model method: a store
    reads no layer above it, so it names the column value, not the table)."""
    rows = conn.execute("SELECT * FROM runs WHERE method = 'reward' AND status = 'done' ORDER BY id DESC")
    return [run for run in map(_run, rows) if base_sha256 in (None, run.base_sha256)]
