"""Rating replies with + / - / 0 and the Feedback screen (F5), driven by Pilot on the real model and database."""

from __future__ import annotations

import json

from textual.widgets import DataTable, Select, Static

from tunelab.stores.conversations import ConversationStore
from tunelab.stores.feedback import FeedbackStore
from tunelab.tui.app import TunelabApp
from tunelab.tui.screens.feedback import FeedbackScreen
from tunelab.tui.widgets.chat.message_view import MessageView

SIZE = (120, 36)


async def test_rate_a_real_reply_then_see_filter_export_and_delete_it(settings, conn, home):
    conversation = ConversationStore(conn).create("rated", params={"max_tokens": 8, "temperature": 0})
    feedback = FeedbackStore(conn)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        for key in ("H", "i", "enter"):
            await pilot.press(key)
        await app.workers.wait_for_complete()
        await pilot.pause()
        reply = chat.query(MessageView).last()
        assert reply.role == "assistant" and reply.message is not None
        reply.focus()  # the prompt input keeps + and - as text; a focused message takes them as ratings
        await pilot.press("plus")
        assert feedback.for_message(reply.message.id).rating == "up"
        assert "👍" in str(reply.query_one(".meta").render())
        await pilot.press("minus")  # changing a rating replaces it
        assert [r.rating for r in feedback.ratings()] == ["down"]
        await pilot.press("0")
        assert feedback.ratings() == [] and "👎" not in str(reply.query_one(".meta").render())
        await pilot.press("minus")
        (rating,) = feedback.ratings()
        assert rating.snapshot.reply == reply.message.content and rating.conversation_id == conversation.id

        await pilot.press("f5")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FeedbackScreen)
        table = screen.query_one("#feedback-ratings", DataTable)
        assert table.row_count == 1 and table.get_row_at(0)[:2] == [rating.id, "👎"]
        counts = screen.query_one("#feedback-counts", DataTable)
        assert counts.row_count == 1 and counts.get_row_at(0)[2:] == [0, 1, 0]  # 👍 0, 👎 1, pairs 0

        screen.query_one("#feedback-rating", Select).value = "up"
        await pilot.pause()
        assert table.row_count == 0
        screen.query_one("#feedback-rating", Select).value = "down"
        await pilot.pause()
        assert table.row_count == 1

        await pilot.press("e")  # export in the chosen format (kto) under the data dir
        status = str(screen.query_one("#feedback-status", Static).render())
        (exported,) = (home / "exports").glob("feedback-kto-*.jsonl")
        assert str(exported) in status.replace("\n", "")
        assert json.loads(exported.read_text())["label"] is False

        table.focus()
        await pilot.press("d")
        await pilot.pause()
        assert feedback.ratings() == [] and table.row_count == 0
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is chat


async def test_rate_a_compare_column_reply(settings, conn, engine):
    from tunelab.runtime.runtime import Runtime
    from tunelab.stores import demo_banks
    from tunelab.stores.banks import BankStore
    from tunelab.tui.screens.compare import CompareScreen
    from tunelab.tui.widgets.compare.arm_column import ArmColumn

    demo = demo_banks.sentiment(size=12)
    BankStore(conn).create("sentiment", demo.rows, demo.instruction)
    feedback = FeedbackStore(conn)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=(140, 44)) as pilot:
        await app.push_screen(CompareScreen(Runtime(settings, conn, engine=engine), seed=3))
        await pilot.pause()
        screen = app.screen
        screen.query_one("#compare-arms").value = "base, base+random@1"
        prompt = screen.query_one("#compare-prompt")
        prompt.value = "An utterly charming, funny film."
        prompt.focus()
        await pilot.press("enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        column = screen.query_one("#arm-1", ArmColumn)
        column.query_one(".arm-body").focus()
        await pilot.press("plus")
        (rating,) = feedback.ratings()
        assert rating.rating == "up" and rating.subject.startswith("arena:") and rating.subject.endswith(":1")
        assert rating.snapshot.arm == screen.round.arms[1].name and rating.snapshot.reply == column.text
        assert rating.snapshot.prompt[-1] == {"role": "user", "content": "An utterly charming, funny film."}
        assert "👍" in str(column.query_one(".arm-title").render())
        await pilot.press("minus")
        assert [r.rating for r in feedback.ratings()] == ["down"]
        await pilot.press("0")
        assert feedback.ratings() == [] and "👎" not in str(column.query_one(".arm-title").render())
