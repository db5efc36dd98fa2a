"""The chat screen driven by Textual's Pilot, on the real model and database."""

from __future__ import annotations

from tunelab.stores.conversations import ConversationStore
from tunelab.tui.app import TunelabApp
from tunelab.tui.screens.chat import ChatScreen
from tunelab.tui.widgets.chat.message_view import MessageView

SIZE = (110, 32)


def make_app(settings, conn) -> TunelabApp:
    return TunelabApp(settings, conn)


async def send(pilot, text: str) -> None:
    for key in text:
        await pilot.press(key if key != " " else "space")
    await pilot.press("enter")


async def test_send_streams_reply_and_stores_it(settings, conn):
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        await send(pilot, "Hi")
        await app.workers.wait_for_complete()
        await pilot.pause()
        views = list(screen.query(MessageView))
        assert [v.role for v in views] == ["user", "assistant"]
        reply = views[-1].message
        assert reply is not None and reply.content and reply.completion_tokens > 0
        assert "tok/s" in str(screen.query_one("#stats").render())
    store = ConversationStore(conn)
    (conv,) = store.list()
    assert [m.role for m in store.messages(conv.id)] == ["user", "assistant"]


async def test_switch_conversation_shows_its_messages(settings, conn):
    store = ConversationStore(conn)
    first = store.create("first")
    store.add_user(first.id, "message in first")
    second = store.create("second")
    store.add_user(second.id, "message in second")
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert [v.text for v in screen.query(MessageView)] == ["message in second"]
        screen.query_one("#conversations").focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert screen.conversation_id == first.id
        assert [v.text for v in screen.query(MessageView)] == ["message in first"]


async def test_escape_cancels_and_saves_partial_reply(settings, conn):
    store = ConversationStore(conn)
    conv = store.create("long", params={"max_tokens": 400, "temperature": 0})
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Write a very long story about a lighthouse keeper.")
        for _ in range(200):
            await pilot.pause(0.05)
            if app.screen.streaming is not None and app.screen.streaming.body.source:
                break
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
    reply = store.messages(conv.id)[-1]
    assert reply.role == "assistant" and reply.interrupted and reply.finish_reason == "cancelled"
    assert reply.completion_tokens < 400


async def test_settings_modal_saves_params_and_rejects_bad_values(settings, conn):
    store = ConversationStore(conn)
    conv = store.create("tuned")
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await pilot.pause()
        field = app.screen.query_one("#param-temperature")
        field.value = "0.25"
        app.screen.query_one("#system-prompt").text = "Be terse."
        await pilot.click("#save")
        await pilot.pause()
        assert store.get(conv.id).params["temperature"] == 0.25
        assert store.get(conv.id).system_prompt == "Be terse."
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#param-top_p").value = "7"
        await pilot.click("#save")
        await pilot.pause()
        assert any("top_p" in n.message for n in app._notifications)
        assert store.get(conv.id).params["top_p"] == 0.95


async def test_empty_prompt_is_a_notification(settings, conn):
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        assert any("empty prompt" in n.message for n in app._notifications)
    assert ConversationStore(conn).list() == []


async def test_an_unexpected_error_in_the_reply_worker_is_one_line_and_the_app_keeps_running(settings, conn, monkeypatch):
    from tunelab.runtime.chat_service import ChatService

    def broken(*args, **kwargs):
        raise RuntimeError("llama_decode returned -3\nsecond line of detail")

    monkeypatch.setattr(ChatService, "send", broken)
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Hi")
        await app.workers.wait_for_complete()
        await pilot.pause()
        (shown,) = [n.message for n in app._notifications if "failed" in n.message]
        assert shown.startswith("generate failed: RuntimeError: llama_decode returned -3 second line of detail")
        assert "\n" not in shown and str(settings.dirs.error_log) in shown
        assert app.is_running and isinstance(app.screen, ChatScreen)
        await send(pilot, "x")  # the screen still takes input
        await app.workers.wait_for_complete()
    log = settings.dirs.error_log.read_text(encoding="utf-8")
    assert log.count("Traceback (most recent call last)") == 2 and "RuntimeError: llama_decode returned -3" in log


def test_snapshot_empty_chat(snap_compare, settings, conn):
    assert snap_compare(make_app(settings, conn), terminal_size=SIZE)


def test_snapshot_settings_modal(snap_compare, settings, conn):
    ConversationStore(conn).create("snap", system_prompt="You are helpful.")
    assert snap_compare(make_app(settings, conn), press=["ctrl+s"], terminal_size=SIZE)


async def test_keys_can_be_remapped_from_config(home, conn):
    from tunelab.config import Settings

    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[keymap]\n"chat.settings" = "f6"\n')
    app = make_app(Settings.load(), conn)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f6")
        await pilot.pause()
        assert type(app.screen).__name__ == "ChatSettingsScreen"


async def test_f1_shows_the_keys(settings, conn):
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert app.screen.query("HelpPanel")


async def test_filter_narrows_the_conversation_list_by_title_and_message_text(settings, conn):
    store = ConversationStore(conn)
    soup = store.create("Soup")
    store.add_user(soup.id, "How long should lentils simmer?")
    knots = store.create("Knots")
    bikes = store.create("Bikes")
    store.add_user(bikes.id, "Which chain lube for lentil-dusty roads?")
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        listed = lambda: [item.name for item in screen.query_one("#conversations").children]  # noqa: E731
        assert len(listed()) == 3
        screen.query_one("#conversation-filter").focus()
        for key in "lentil":
            await pilot.press(key)
        await pilot.pause()
        assert listed() == [str(bikes.id), str(soup.id)]  # message text (word prefix), newest first
        await pilot.press(*["backspace"] * 6, "k", "n", "o")
        await pilot.pause()
        assert listed() == [str(knots.id)]  # the title
        await pilot.press("enter")  # Enter in the filter sends nothing
        await pilot.pause()
        assert all(len(store.messages(c.id)) <= 1 for c in store.list())
        await pilot.press(*["backspace"] * 3)
        await pilot.pause()
        assert len(listed()) == 3
