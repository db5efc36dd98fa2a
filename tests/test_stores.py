"""SQLite stores: schema, migrations, round-trips and provenance."""

from __future__ import annotations

import sqlite3

import pytest

from tunelab.errors import TunelabError
from tunelab.stores.conversations import ConversationStore, ReplyRecord
from tunelab.stores.db import applied_migrations, connect
from tunelab.stores.files import atomic_file, atomic_write_text, cached_sha256, sha256_file
from tunelab.stores.migrations import all_migrations


def _record(**changes) -> ReplyRecord:
    values = dict(
        model_path="/m.gguf",
        model_sha256="abc",
        params={"temperature": 0.0},
        seed=7,
        prompt_tokens=10,
        completion_tokens=3,
        ttft_ms=12.5,
        decode_tps=80.0,
        total_ms=50.0,
        finish_reason="stop",
        provenance={"icl": {"k": 2}},
    )
    values.update(changes)
    return ReplyRecord(**values)


def test_schema_has_every_migration_and_wal(conn):
    assert applied_migrations(conn) == [m.name for m in all_migrations()]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = {r["name"] for r in conn.execute("PRAGMA table_info(messages)")}
    assert {"model_sha256", "params_json", "seed", "ttft_ms", "interrupted", "provenance_json"} <= columns


def test_migrating_an_old_database_keeps_its_data(settings):
    migrations = all_migrations()
    old = connect(settings.db_path, migrations=migrations[:1])
    assert applied_migrations(old) == [migrations[0].name]
    store = ConversationStore(old)
    conv = store.create("kept", system_prompt="sys")
    store.add_user(conv.id, "hello")
    old.close()
    new = connect(settings.db_path)
    assert applied_migrations(new) == [m.name for m in migrations]
    assert [m.content for m in ConversationStore(new).messages(conv.id)] == ["hello"]
    assert new.execute("SELECT count(*) FROM file_hashes").fetchone()[0] == 0


def test_failed_migration_leaves_nothing_behind(settings):
    from tunelab.stores.migrations import Migration

    def broken(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        connect(settings.db_path, migrations=all_migrations()[:1] + [Migration("m9999_broken", broken)])
    conn = sqlite3.connect(settings.db_path)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
    assert [r[0] for r in conn.execute("SELECT name FROM _migrations")] == [all_migrations()[0].name]


def test_conversation_round_trip_with_provenance(conn):
    store = ConversationStore(conn)
    conv = store.create("t", system_prompt="be nice", params={"temperature": 0.2})
    store.add_user(conv.id, "hi")
    reply = store.add_reply(conv.id, "hello!", _record(interrupted=True, adapter="a.gguf"))
    got = store.message(reply.id)
    assert got.role == "assistant" and got.content == "hello!"
    assert got.model_sha256 == "abc" and got.seed == 7 and got.params == {"temperature": 0.0}
    assert got.interrupted is True and got.adapter == "a.gguf"
    assert got.provenance == {"icl": {"k": 2}}
    assert store.get(conv.id).params == {"temperature": 0.2}
    assert [m.role for m in store.messages(conv.id)] == ["user", "assistant"]


def test_rename_delete_and_unknown_ids(conn):
    store = ConversationStore(conn)
    conv = store.create("old")
    assert store.update(conv.id, title="new").title == "new"
    store.add_user(conv.id, "x")
    store.delete(conv.id)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    with pytest.raises(TunelabError, match="no conversation with id"):
        store.get(conv.id)


def test_model_hash_is_cached_by_size_and_mtime(conn, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 100)
    digest = cached_sha256(conn, path)
    assert digest == sha256_file(path)
    row = conn.execute("SELECT sha256 FROM file_hashes").fetchone()
    assert row["sha256"] == digest
    path.write_bytes(b"GGUF" + b"\1" * 200)
    assert cached_sha256(conn, path) == sha256_file(path) != digest


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "out" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_a_writer_failing_inside_atomic_file_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.gguf"
    target.write_bytes(b"old")
    with pytest.raises(OSError), atomic_file(target) as tmp:
        tmp.write_bytes(b"half a ")
        raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.gguf"]
