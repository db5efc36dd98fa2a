"""Ratings and votes in SQLite: one current rating per reply, frozen snapshots, pairs and exports."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.finetune import feedback_data
from tunelab.stores.conversations import ConversationStore, ReplyRecord
from tunelab.stores.feedback import FeedbackStore, PreferenceVote


def _record(**provenance: object) -> ReplyRecord:
    return ReplyRecord(
        model_path="/models/base.gguf",
        model_sha256="abc123",
        params={"temperature": 0.7, "seed": 3},
        seed=3,
        prompt_tokens=10,
        completion_tokens=5,
        ttft_ms=1.0,
        decode_tps=50.0,
        total_ms=20.0,
        finish_reason="stop",
        provenance=dict(provenance),
    )


def _reply(conn: sqlite3.Connection, prompt: str, reply: str, conversation_id: int | None = None, **provenance: object) -> int:
    store = ConversationStore(conn)
    if conversation_id is None:
        conversation_id = store.create(system_prompt="Be brief.").id
    store.add_user(conversation_id, prompt)
    return store.add_reply(conversation_id, reply, _record(**provenance)).id


def test_rate_change_and_remove_keep_one_current_rating(conn: sqlite3.Connection) -> None:
    feedback = FeedbackStore(conn)
    message_id = _reply(conn, "Capital of France?", "Paris.")

    first = feedback.rate_message(message_id, "up", reason="correct")
    assert first is not None and first.rating == "up" and first.reason == "correct"
    changed = feedback.rate_message(message_id, "down", comment="too short")
    assert changed is not None and changed.rating == "down" and changed.comment == "too short"
    assert changed.id == first.id and changed.created_at == first.created_at
    assert [r.rating for r in feedback.ratings()] == ["down"]

    assert feedback.rate_message(message_id, None) is None
    assert feedback.ratings() == [] and feedback.for_message(message_id) is None
    feedback.rate_message(message_id, None)  # removing twice is not an error

    with pytest.raises(TunelabError, match="unknown rating"):
        feedback.rate_message(message_id, "meh")


def test_snapshot_is_the_prompt_as_sent_and_stays_frozen(conn: sqlite3.Connection) -> None:
    conversations, feedback = ConversationStore(conn), FeedbackStore(conn)
    first = _reply(conn, "hi", "hello")
    conversation_id = conversations.message(first).conversation_id
    icl = {"selector": "jaccard", "k": 1, "examples": [{"id": 7, "input": "2+2?", "output": "4"}]}
    second = _reply(conn, "3+3?", "6", conversation_id, icl=icl)
    rating = feedback.rate_message(second, "up")
    assert rating is not None

    expected = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "3+3?"},
    ]
    assert rating.snapshot.prompt == expected
    assert rating.snapshot.reply == "6" and rating.snapshot.model_sha256 == "abc123"
    assert rating.snapshot.params["seed"] == 3 and rating.snapshot.provenance["icl"]["k"] == 1

    conversations.update(conversation_id, system_prompt="Be verbose.")
    conversations.delete_message(first)
    assert feedback.get(f"message:{second}").snapshot.prompt == expected

    conversations.delete(conversation_id)
    survived = feedback.get(f"message:{second}")
    assert survived.snapshot.prompt == expected and survived.message_id is None
    assert feedback.ratings()[0].rating == "up"


def test_only_replies_can_be_rated_and_unknown_ids_are_clear(conn: sqlite3.Connection) -> None:
    feedback = FeedbackStore(conn)
    reply_id = _reply(conn, "q", "a")
    with pytest.raises(TunelabError, match="only replies can be rated"):
        feedback.rate_message(reply_id - 1, "up")
    with pytest.raises(TunelabError, match="no message with id 999"):
        feedback.rate_message(999, "up")
    with pytest.raises(TunelabError, match="no rating with id 42"):
        feedback.delete(42)


def test_dropped_turns_are_left_out_of_the_snapshot(conn: sqlite3.Connection) -> None:
    conversations = ConversationStore(conn)
    first = _reply(conn, "old question", "old answer")
    conversation_id = conversations.message(first).conversation_id
    conversations.add_user(conversation_id, "new question")
    record = _record()
    record.dropped_turns = 2
    reply = conversations.add_reply(conversation_id, "new answer", record)
    rating = FeedbackStore(conn).rate_message(reply.id, "down")
    assert rating is not None
    assert [m["content"] for m in rating.snapshot.prompt] == ["Be brief.", "new question"]


def _same_prompt_ratings(conn: sqlite3.Connection, n: int) -> None:
    """n prompts, each with a good and a bad reply rated 👍 / 👎 (separate conversations, same prompt)."""
    feedback = FeedbackStore(conn)
    for i in range(n):
        prompt = f"What is {i} + 1?"
        feedback.rate_message(_reply(conn, prompt, f"{i + 1}"), "up")
        feedback.rate_message(_reply(conn, prompt, f"{i + 7}, obviously"), "down")


def test_pairs_come_from_votes_and_same_prompt_ratings(conn: sqlite3.Connection) -> None:
    feedback = FeedbackStore(conn)
    _same_prompt_ratings(conn, 2)
    prompt = [{"role": "user", "content": "Say hi"}]
    feedback.vote(PreferenceVote(prompt, "Hi!", "Go away.", "a", a_arm="base", b_arm="kto-1"))
    feedback.vote(PreferenceVote(prompt, "Hi!", "Hello!", "tie"))
    feedback.vote(PreferenceVote(prompt, "Hi! ", "Hi!", "both_bad"))
    with_icl = [{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Red"}, *prompt]
    shared = {"prompt": with_icl}
    feedback.vote(PreferenceVote(prompt, "Blue", "Dog", "b", a_snapshot=shared, b_snapshot=shared))
    feedback.vote(PreferenceVote(prompt, "Pear", "Pear ", "b"))  # differs only in whitespace

    data = feedback_data.collect(conn)
    sources = sorted(p.source.split(":")[0] for p in data.pairs)
    assert sources == ["ratings", "ratings", "vote", "vote"]
    votes = [p for p in data.pairs if p.source.startswith("vote")]
    assert (votes[0].chosen, votes[0].rejected, votes[0].prompt) == ("Hi!", "Go away.", prompt)
    assert (votes[1].chosen, votes[1].rejected, votes[1].prompt) == ("Dog", "Blue", with_icl)
    assert data.skipped == {"tie or both bad": 2, "identical texts": 1}
    assert (data.up, data.down) == (2, 2)

    counts = {(c.model_sha256, c.adapter): (c.up, c.down, c.pairs) for c in feedback.counts()}
    assert counts == {("abc123", None): (2, 2, 0), (None, "base"): (0, 0, 1), (None, "kto-1"): (0, 0, 1), (None, None): (0, 0, 2)}

    with pytest.raises(TunelabError, match="identical"):
        feedback.vote(PreferenceVote(prompt, "same", "same", "b"))


def test_too_little_feedback_is_refused_with_what_is_needed(conn: sqlite3.Connection) -> None:
    with pytest.raises(TunelabError, match="no ratings yet"):
        feedback_data.check_enough(feedback_data.collect(conn), "kto")
    with pytest.raises(TunelabError, match="no preference pairs"):
        feedback_data.check_enough(feedback_data.collect(conn), "dpo")

    feedback = FeedbackStore(conn)
    for i in range(3):
        feedback.rate_message(_reply(conn, f"q{i}", f"a{i}"), "up")
    data = feedback_data.collect(conn)
    with pytest.raises(TunelabError, match="rate 5 more replies"):
        feedback_data.check_enough(data, "kto")
    with pytest.raises(TunelabError, match="--method kto"):
        feedback_data.check_enough(data, "dpo")
    for i in range(5):
        feedback.rate_message(_reply(conn, f"p{i}", f"b{i}"), "up")
    with pytest.raises(TunelabError, match="KTO needs some 👎"):
        feedback_data.check_enough(feedback_data.collect(conn), "kto")

    _same_prompt_ratings(conn, 2)
    with pytest.raises(TunelabError, match="2 more needed for reward"):
        feedback_data.check_enough(feedback_data.collect(conn), "reward")
    feedback_data.check_enough(feedback_data.collect(conn), "kto")


@pytest.mark.parametrize("fmt", feedback_data.FORMATS)
def test_exports_load_with_datasets(conn: sqlite3.Connection, tmp_path: Path, fmt: str) -> None:
    from datasets import load_dataset

    _same_prompt_ratings(conn, 3)
    path = tmp_path / f"{fmt}.jsonl"
    n = feedback_data.export(conn, fmt, path)
    dataset = load_dataset("json", data_files=str(path), split="train")
    assert len(dataset) == n == (6 if fmt == "kto" else 3)
    row = dataset[0]
    if fmt == "kto":
        assert set(row) == {"prompt", "completion", "label"} and row["label"] is True
        assert row["prompt"][-1] == {"role": "user", "content": "What is 0 + 1?"}
    elif fmt == "llamafactory":
        assert row["conversations"] == [{"from": "human", "value": "What is 0 + 1?"}]
        assert row["chosen"] == {"from": "gpt", "value": "1"} and row["system"] == "Be brief."
        info = json.loads((tmp_path / "dataset_info.json").read_text())
        assert info["tunelab_feedback"]["file_name"] == path.name and info["tunelab_feedback"]["ranking"] is True
    else:
        assert row["chosen"] == [{"role": "assistant", "content": "1"}]
        assert row["rejected"] == [{"role": "assistant", "content": "7, obviously"}]


def test_export_with_nothing_to_export_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    with pytest.raises(TunelabError, match="nothing to export"):
        feedback_data.export(conn, "dpo", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(TunelabError, match="unknown format"):
        feedback_data.export(conn, "csv", tmp_path / "x.jsonl")


def test_schema_has_feedback_tables(conn: sqlite3.Connection) -> None:
    columns = {r["name"] for r in conn.execute("PRAGMA table_info(ratings)")}
    assert {
        "subject",
        "message_id",
        "rating",
        "reason",
        "comment",
        "prompt_json",
        "reply",
        "model_sha256",
        "adapter",
        "arm",
        "params_json",
    } <= columns
    votes = {r["name"] for r in conn.execute("PRAGMA table_info(preference_votes)")}
    assert {"prompt_json", "a_reply", "b_reply", "choice"} <= votes
