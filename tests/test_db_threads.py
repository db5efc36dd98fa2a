"""One SQLite connection shared by two threads of one process, as in the TUI: a worker saves
replies while the UI thread rates and votes. Without the connection's lock, a statement of one
thread ran inside the other's open transaction ("cannot start a transaction within a transaction",
or a rating committed or rolled back with somebody else's reply)."""

from __future__ import annotations

import threading

from tunelab.stores.conversations import ConversationStore, ReplyRecord
from tunelab.stores.db import transaction
from tunelab.stores.feedback import FeedbackStore, PreferenceVote

REPLIES = 200


def test_a_worker_saving_200_replies_while_another_thread_rates_and_votes(conn) -> None:
    conversations = ConversationStore(conn)
    conversation = conversations.create(system_prompt="You are terse.")
    saved: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def save_replies() -> None:  # the chat worker
        try:
            for i in range(REPLIES):
                conversations.add_user(conversation.id, f"question {i}")
                record = ReplyRecord("bundled.gguf", "sha", {"temperature": 0.7, "seed": i}, i, 5, 3, None, None, 1.0, "stop")
                saved.append(conversations.add_reply(conversation.id, f"reply {i}", record).id)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread's assertion
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=save_replies)
    worker.start()
    feedback = FeedbackStore(conn)
    rated: set[int] = set()
    votes = 0
    while not done.is_set() or len(rated) < len(saved):  # the UI thread, rating each reply as it appears
        for message_id in list(saved):
            if message_id not in rated:
                feedback.rate_message(message_id, "up" if message_id % 2 else "down")
                rated.add(message_id)
                feedback.vote(PreferenceVote(prompt=[{"role": "user", "content": f"q{message_id}"}], a_reply="a", b_reply="b", choice="a"))
                votes += 1
        with transaction(conn):  # a transaction of this thread's own, between the worker's
            conn.execute("SELECT COUNT(*) FROM messages").fetchone()
    worker.join()

    assert errors == []
    assert len(saved) == len(rated) == votes == REPLIES
    assert conn.execute("SELECT COUNT(*) FROM messages WHERE role = 'assistant'").fetchone()[0] == REPLIES
    assert conn.execute("SELECT COUNT(*) FROM messages WHERE role = 'user'").fetchone()[0] == REPLIES
    assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == REPLIES
    assert conn.execute("SELECT COUNT(*) FROM preference_votes").fetchone()[0] == REPLIES
    assert not conn.in_transaction
    replies = [conversations.message(i) for i in saved]
    assert [m.content for m in replies] == [f"reply {i}" for i in range(REPLIES)]
    assert [m.params["seed"] for m in replies] == list(range(REPLIES))  # each reply saved whole
