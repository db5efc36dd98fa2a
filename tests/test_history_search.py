"""Full-text search over messages (migration m0007: FTS5 + triggers) in the store, the CLI and the TUI filter."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tunelab.cli import cli
from tunelab.errors import TunelabError
from tunelab.stores.conversations import ConversationStore, ReplyRecord
from tunelab.stores.db import connect
from tunelab.stores.migrations import all_migrations

RECORD = ReplyRecord(
    model_path="/m.gguf",
    model_sha256="abc",
    params={},
    seed=0,
    prompt_tokens=5,
    completion_tokens=3,
    ttft_ms=1.0,
    decode_tps=10.0,
    total_ms=5.0,
    finish_reason="stop",
)


def chat(store: ConversationStore, title: str, prompt: str, reply: str) -> int:
    conv = store.create(title=title)
    store.add_user(conv.id, prompt)
    store.add_reply(conv.id, reply, RECORD)
    return conv.id


def index_ok(conn) -> None:
    """FTS5's own check that the index matches the messages table row for row (raises if not)."""
    conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")


def test_schema_has_the_index_and_its_triggers(conn) -> None:
    names = {r["name"] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}
    assert {"messages_fts", "messages_fts_insert", "messages_fts_delete", "messages_fts_update"} <= names
    assert "fts5" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_fts'").fetchone()[0]


def test_search_finds_words_and_prefixes_best_first(conn) -> None:
    store = ConversationStore(conn)
    pasta = chat(store, "Dinner", "How long do I boil spaghetti?", "Boil spaghetti for nine minutes in salted water.")
    chat(store, "Trip", "Pack list for a hike?", "Water, a map and snacks.")
    hits = store.search("spaghetti")
    assert {h.message.conversation_id for h in hits} == {pasta}
    assert hits[0].message.content.count("spaghetti") >= 1 and "[spaghetti]" in hits[0].snippet.lower()
    assert hits[0].conversation_title == "Dinner"
    assert {h.message.role for h in store.search("water")} == {"assistant"} and len(store.search("water")) == 2
    assert len(store.search("spag")) == 2  # word prefixes match, as a filter does while typing
    assert [h.message.role for h in store.search("boil minutes")] == ["assistant"]  # every word must occur
    assert store.search("spaghetti hike") == []
    assert len(store.search("water", limit=1)) == 1
    index_ok(conn)


def test_query_syntax_in_user_text_is_searched_literally(conn) -> None:
    store = ConversationStore(conn)
    chat(store, "Q", 'He said "NEAR" and OR - what?', "No idea.")
    assert len(store.search('"NEAR" OR -')) == 1  # quotes and operators are plain words, not FTS5 syntax
    assert len(store.search("near*")) == 1
    with pytest.raises(TunelabError, match="nothing to search"):
        store.search("?!*")


def test_triggers_follow_edits_deletes_and_cascades(conn) -> None:
    store = ConversationStore(conn)
    cid = chat(store, "Colours", "Name a colour", "Vermilion.")
    (hit,) = store.search("vermilion")
    conn.execute("UPDATE messages SET content = 'Turquoise.' WHERE id = ?", (hit.message.id,))
    assert store.search("vermilion") == [] and len(store.search("turquoise")) == 1
    store.delete_message(hit.message.id)
    assert store.search("turquoise") == []
    store.delete(cid)  # ON DELETE CASCADE removes the user message too: the trigger still fires
    assert store.search("colour") == []
    index_ok(conn)


def test_migration_indexes_messages_written_before_it(settings) -> None:
    before = [m for m in all_migrations() if m.name < "m0007"]
    old = connect(settings.db_path, before)
    chat(ConversationStore(old), "Old", "An ancient question about lighthouses", "Lighthouses guide ships.")
    old.close()
    conn = connect(settings.db_path)
    assert sorted(h.message.role for h in ConversationStore(conn).search("lighthouses")) == ["assistant", "user"]
    index_ok(conn)
    conn.close()


def test_matching_conversations_by_title_or_message(conn) -> None:
    store = ConversationStore(conn)
    a = chat(store, "Dinner plans", "What to cook?", "Risotto.")
    b = chat(store, "Trip", "Where to?", "Somewhere with risotto.")
    chat(store, "Other", "Hello", "Hi.")
    assert [c.id for c in store.matching("risotto")] == [b, a]  # newest first
    assert [c.id for c in store.matching("dinner")] == [a]  # title only
    assert len(store.matching("   ")) == 3


def test_cli_search_list_and_show_json(conn) -> None:
    store = ConversationStore(conn)
    first = chat(store, "Knots", "How do I tie a bowline?", "Make a loop, pass the end up through it.")
    chat(store, "Knots again", "And a clove hitch?", "Two loops over the post.")
    runner = CliRunner()
    found = runner.invoke(cli, ["history", "search", "bowline", "--json"], catch_exceptions=False)
    assert found.exit_code == 0, found.output
    (hit,) = json.loads(found.stdout)
    assert hit["message"]["conversation_id"] == first and hit["message"]["role"] == "user"
    assert set(hit) == {"message", "conversation_title", "snippet", "rank"} and hit["conversation_title"] == "Knots"
    text = runner.invoke(cli, ["history", "search", "loop", "-n", "1"], catch_exceptions=False)
    assert len(text.stdout.strip().splitlines()) == 1 and "[loop" in text.stdout.lower()
    listed = json.loads(runner.invoke(cli, ["history", "list", "--json", "-n", "1"], catch_exceptions=False).stdout)
    assert len(listed) == 1 and listed[0]["title"] == "Knots again" and listed[0]["message_count"] == 2
    shown = json.loads(runner.invoke(cli, ["history", "show", str(first), "--json"], catch_exceptions=False).stdout)
    assert shown["title"] == "Knots" and shown["messages"][1]["model_sha256"] == "abc"
    bad = runner.invoke(cli, ["history", "search", "***"])
    assert bad.exit_code == 1 and "nothing to search" in bad.output and "Traceback" not in bad.output
