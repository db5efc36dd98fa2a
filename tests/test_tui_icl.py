"""The chat screen's ICL panel driven by Pilot: examples go into the prompt, are listed, and stored."""

from __future__ import annotations

from textual.widgets import Checkbox, Input, Select, Static

from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore
from tunelab.stores.conversations import ConversationStore
from tunelab.tui.app import TunelabApp
from tunelab.tui.widgets.chat.message_view import MessageView

SIZE = (140, 36)


async def send(pilot, text: str) -> None:
    for key in text:
        await pilot.press(key if key != " " else "space")
    await pilot.press("enter")


def tiny_icl_chat(conn) -> None:
    """Bank `tiny` (four labelled reviews, all train) and a greedy 4-token conversation to ask in."""
    rows = [
        ExampleRow(t, label, 0)
        for t, label in [
            ("loved the film", "positive"),
            ("hated the film", "negative"),
            ("a joyful ride", "positive"),
            ("a tedious slog", "negative"),
        ]
    ]
    BankStore(conn).create("tiny", rows, instruction="Answer positive or negative.", test_size=0.0)
    ConversationStore(conn).create("icl", params={"max_tokens": 4, "temperature": 0})


async def test_icl_reply_lists_its_examples_and_their_token_cost(settings, conn):
    tiny_icl_chat(conn)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert screen.query_one("#icl-bank", Select).value == "tiny"
        await pilot.click("#icl-on")
        screen.query_one("#icl-selector", Select).value = "jaccard"
        screen.query_one("#icl-k", Input).value = "2"
        screen.query_one("#prompt", Input).focus()
        await send(pilot, "I hated this tedious slog of a film")
        await app.workers.wait_for_complete()
        await pilot.pause()
        panel_text = str(screen.query_one("#icl-examples", Static).render())
        assert "tiny · jaccard · k 2" in panel_text and "hated the film" in panel_text and "a tedious slog" in panel_text
        assert "for 2 examples" in str(screen.query_one("#stats", Static).render())
        reply = [v for v in screen.query(MessageView) if v.role == "assistant"][-1].message
        assert reply is not None and [e["input"] for e in reply.provenance["icl"]["examples"]] == ["a tedious slog", "hated the film"]

        screen.query_one("#icl-k", Input).value = "0"  # a bad k is a notification, nothing is sent
        screen.query_one("#prompt", Input).focus()
        await send(pilot, "again")
        await pilot.pause()
        assert any("k must be at least 1" in n.message for n in app._notifications)
        assert len(ConversationStore(conn).messages(reply.conversation_id)) == 2


async def test_icl_off_is_zero_shot(settings, conn):
    app = TunelabApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        assert app.screen.query_one("#icl-on", Checkbox).value is False
        assert app.screen.query_one("#icl-bank", Select).value is Select.NULL  # no banks yet
        await pilot.click("#icl-on")
        app.screen.query_one("#prompt", Input).focus()
        await send(pilot, "hello")
        await pilot.pause()
        assert any("no bank is chosen" in n.message for n in app._notifications)
        assert ConversationStore(conn).list() == []  # nothing sent, and no empty conversation left behind
