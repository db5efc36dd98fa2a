"""The chat screen: conversations on the left, the streamed conversation and the prompt on the right."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Markdown, Select, Static
from textual.worker import Worker, get_current_worker

from tunelab.engine.reply import ReplyStats
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.runtime.best_of_n import BestOfRequest
from tunelab.runtime.chat_service import ChatService, ChatTurn, IclRequest
from tunelab.tui.screens.chat_settings import ChatSettingsScreen
from tunelab.tui.screens.text_prompt import TextPromptScreen
from tunelab.tui.screens.tokens import TokensScreen
from tunelab.tui.widgets.chat.context_panel import NO_ADAPTER, ContextPanel
from tunelab.tui.widgets.chat.conversation_list import ConversationList
from tunelab.tui.widgets.chat.message_view import MessageView
from tunelab.tui.worker_errors import report_failed_worker

if TYPE_CHECKING:
    from tunelab.stores.conversations import Message

FLUSH_SECONDS = 0.05  # batch tokens: repaint Markdown at most ~20 times a second


class ChatScreen(Screen[None]):
    BINDINGS = [
        Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
        Binding("f2", "rename", "Rename", id="chat.rename"),
        Binding("f8", "delete_chat", "Delete chat", id="chat.delete"),
        Binding("ctrl+g", "regenerate", "Regenerate", id="chat.regenerate"),
        Binding("escape", "cancel", "Stop", id="chat.cancel"),
        Binding("ctrl+y", "copy_message", "Copy", id="chat.copy"),
        Binding("ctrl+s", "settings", "Settings", id="chat.settings"),
        Binding("plus", "rate('up')", "👍", id="chat.rate_up"),
        Binding("minus", "rate('down')", "👎", id="chat.rate_down"),
        Binding("0", "rate(None)", "Unrate", id="chat.rate_clear", show=False),
        Binding("t", "tokens", "Tokens", id="chat.tokens"),
        Binding("ctrl+o", "switch_model", "Model", id="chat.model", show=False),
    ]

    conversation_id: reactive[int | None] = reactive(None, always_update=True, init=False)
    """The open conversation; setting it (a pick, a new chat adopted, a delete) refreshes the list's highlight."""

    def __init__(self, service: ChatService) -> None:
        super().__init__()
        self.service = service
        self.streaming: MessageView | None = None
        self._stream: Any = None
        self.adapter: str | None = None
        """The adapter the engine serves now (the panel's choice is applied on the next reply)."""
        self._started = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Input(placeholder="filter (words)", id="conversation-filter")
                yield ConversationList(id="conversations")
            with Vertical(id="chat-main"):
                yield VerticalScroll(id="messages")
                yield Static("", id="stats")
                yield Input(placeholder="Message (Enter to send, Esc to stop)", id="prompt")
            yield ContextPanel(*self.service.context_choices(), id="context")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.service.runtime.model_label
        conversations = self.service.conversations()
        if conversations:
            self.open_conversation(conversations[0].id)
        else:
            self.refresh_list()
        self.query_one("#prompt", Input).focus()

    # -- conversations ---------------------------------------------------------------------
    def watch_conversation_id(self) -> None:
        self.refresh_list()

    def refresh_list(self) -> None:
        """The conversation list, narrowed to those matching the filter (full-text search, m0007)."""
        text = self.query_one("#conversation-filter", Input).value
        self.query_one(ConversationList).show(self.service.matching(text), self.conversation_id)

    @on(Input.Changed, "#conversation-filter")
    def filter_changed(self) -> None:
        self.refresh_list()

    def open_conversation(self, conversation_id: int | None) -> None:
        self.conversation_id = conversation_id
        log = self.query_one("#messages", VerticalScroll)
        log.remove_children()
        if conversation_id is not None:
            views = [MessageView(m.role, m.content, m) for m in self.service.messages(conversation_id)]
            for view in views:
                view.rating = self.service.rating_of(view.message.id) if view.role == "assistant" and view.message else None
            log.mount_all(views)
            log.scroll_end(animate=False)

    def on_conversation_list_picked(self, event: ConversationList.Picked) -> None:
        if event.conversation_id != self.conversation_id:
            self.open_conversation(event.conversation_id)

    def action_new_chat(self) -> None:
        self.open_conversation(None)
        self.query_one("#prompt", Input).focus()

    def action_rename(self) -> None:
        if self.conversation_id is None:
            return
        current = self.service.conversation(self.conversation_id).title

        def done(title: str | None) -> None:
            if title and self.conversation_id is not None:
                self.service.rename(self.conversation_id, title)
                self.refresh_list()

        self.app.push_screen(TextPromptScreen("Rename conversation", current), done)

    def action_delete_chat(self) -> None:
        if self.conversation_id is None:
            return
        self.service.delete(self.conversation_id)
        self.notify("conversation deleted")
        remaining = self.service.conversations()
        self.open_conversation(remaining[0].id if remaining else None)

    def action_switch_model(self) -> None:
        """Ctrl+O: serve another model (a registered name or a GGUF path) from the next reply on."""

        def done(model: str | None) -> None:
            if model:
                self.switch_model(model)

        self.app.push_screen(TextPromptScreen("Model (registered name or GGUF path)", self.service.settings.model), done)

    @work(thread=True, exclusive=True, group="model", exit_on_error=False)
    def switch_model(self, model: str) -> None:
        """Off the UI thread: the new model loads once, here, and every screen serves it."""
        app = self.app
        app.call_from_thread(self._status, f"loading {model}…")
        try:
            reloaded = self.service.switch_model(model)
        except TunelabError as exc:
            app.call_from_thread(self._failed, str(exc))
            return
        app.call_from_thread(self._model_switched, self.service.runtime.model_label, reloaded)

    def _model_switched(self, name: str, reloaded: bool) -> None:
        self.sub_title = name
        self._status("")
        if reloaded:
            self.adapter = None
            self.query_one("#adapter", Select).value = NO_ADAPTER
        self.notify(f"model {name} loaded (the adapter is off)" if reloaded else f"already serving {name}")

    def action_settings(self) -> None:
        conv = self.service.conversation(self.conversation_id) if self.conversation_id is not None else None
        params = self.params()

        def done(result: dict[str, Any] | None) -> None:
            if result is None:
                return
            try:
                new_params = SamplerParams.from_dict(result["params"])
            except TunelabError as exc:
                self.notify(str(exc), severity="error")
                return
            self.conversation_id = self.service.save_settings(self.conversation_id, result["system_prompt"], new_params)
            self.refresh_list()
            self.notify("settings saved for this conversation")

        self.app.push_screen(ChatSettingsScreen(conv.system_prompt if conv else "", params), done)

    def params(self) -> SamplerParams:
        return self.service.params(self.conversation_id)

    # -- sending and streaming ---------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    def send_prompt(self, event: Input.Submitted) -> None:
        prompt = event.value
        if not prompt.strip():
            self.notify("empty prompt: type something to send", severity="warning")
            return
        if self.streaming is not None:
            self.notify("a reply is still streaming (Esc stops it)", severity="warning")
            return
        event.input.value = ""
        self.start(self.conversation_id, prompt)  # None: the service stores a new conversation once the prompt is accepted

    def action_regenerate(self) -> None:
        if self.conversation_id is not None and self.streaming is None:
            self.start(self.conversation_id, None)

    def start(self, conversation_id: int | None, prompt: str | None) -> None:
        """Read the ICL, adapter and best-of choice here (widgets belong to this thread), then generate."""
        panel = self.query_one(ContextPanel)
        try:
            icl = panel.request()
            best_of = panel.best_of()
        except TunelabError as exc:
            self.notify(str(exc), severity="error")
            return
        self.generate(conversation_id, prompt, icl, panel.adapter, best_of, panel.plan)

    def on_descendant_focus(self, event: Any) -> None:
        view = event.widget
        if isinstance(view, MessageView) and view.message is not None and view.role == "assistant":
            self.query_one(ContextPanel).show_reply(view.message.provenance)

    def action_cancel(self) -> None:
        self.workers.cancel_group(self, "generate")

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def generate(
        self,
        conversation_id: int | None,
        prompt: str | None,
        icl: IclRequest | None,
        adapter: str | None,
        best_of: tuple[str, int] | None,
        plan: bool = False,
    ) -> None:
        """Runs in a thread: llama.cpp blocks. Widgets are only touched through call_from_thread."""
        worker = get_current_worker()
        app = self.app
        app.call_from_thread(self._status, "thinking…" if self.service.runtime.loaded else "loading model…")
        try:
            params = self.params()
            if adapter != self.adapter:
                app.call_from_thread(self._status, f"switching to {adapter or 'the base model'}…")
                self.service.use_adapter(adapter)
                self.adapter = adapter
            if icl is not None:
                app.call_from_thread(self._status, f"choosing examples from {icl.bank} ({icl.selector})…")
                self.service.selector(
                    icl, lambda done, total: app.call_from_thread(self._status, f"embedding {icl.bank}: {done}/{total} examples…")
                )
            pick = self._best_of_request(best_of, params) if best_of else None
            if plan:
                app.call_from_thread(self._status, "planning, then working the plan step by step…")
            if prompt is None:
                assert conversation_id is not None
                turn = self.service.regenerate(conversation_id, params, icl, pick, plan)
            else:
                turn = self.service.send(conversation_id, prompt, params, icl, pick, plan=plan)
        except TunelabError as exc:
            app.call_from_thread(self._failed, str(exc))
            return
        if conversation_id is None:
            app.call_from_thread(self._adopt, turn.conversation_id)
        app.call_from_thread(self._begin_reply, prompt)  # type: ignore[arg-type]  # mypy solves Textual's `T | Awaitable[T]` to Never for a coroutine callback
        pending: list[str] = list(turn.reply.parts)  # a best-of reply is complete already
        last_flush = time.monotonic()
        chunks = 0
        try:
            for chunk in turn.reply:
                pending.append(chunk)
                chunks += 1
                if worker.is_cancelled:
                    break
                if time.monotonic() - last_flush >= FLUSH_SECONDS:
                    app.call_from_thread(self._write, "".join(pending), chunks, turn)  # type: ignore[arg-type]  # mypy solves Textual's `T | Awaitable[T]` to Never for a coroutine callback
                    pending.clear()
                    last_flush = time.monotonic()
        finally:
            turn.reply.close()
            message = turn.save()
        app.call_from_thread(self._end_reply, "".join(pending), message, turn.reply.stats)  # type: ignore[arg-type]  # mypy solves Textual's `T | Awaitable[T]` to Never for a coroutine callback

    def _best_of_request(self, choice: tuple[str, int], params: SamplerParams) -> BestOfRequest:
        """Runs in the worker: every candidate is sampled before the reply shows, so say what is happening."""
        name, n = choice
        self.app.call_from_thread(self._status, f"loading reward model {name}, sampling {n} replies…")
        return self.service.best_of(n, params, name)

    def _adopt(self, conversation_id: int) -> None:
        """The new conversation the first accepted prompt created becomes the current one."""
        self.conversation_id = conversation_id

    def _status(self, text: str) -> None:
        self.query_one("#stats", Static).update(text)

    def _failed(self, error: str) -> None:
        self._status("")
        self.notify(error, severity="error")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if report_failed_worker(self, event, self.service.settings.dirs.error_log):
            self._status("")

    async def _begin_reply(self, prompt: str | None) -> None:
        log = self.query_one("#messages", VerticalScroll)
        if prompt is None:  # regenerate: the old reply is gone from the store
            views = log.query(MessageView)
            if views and views.last().role == "assistant":
                await views.last().remove()
        else:
            await log.mount(MessageView("user", prompt))
        self.streaming = MessageView("assistant")
        await log.mount(self.streaming)
        self._stream = Markdown.get_stream(self.streaming.body)
        self._started = time.monotonic()
        log.scroll_end(animate=False)
        self.refresh_list()

    async def _write(self, text: str, chunks: int, turn: ChatTurn) -> None:
        await self._stream.write(text)
        rate = chunks / max(time.monotonic() - self._started, 1e-6)
        self._status(f"generating… {chunks} tokens · {rate:.1f} tok/s · prompt {turn.reply.stats.prompt_tokens} tokens")
        self.query_one("#messages", VerticalScroll).scroll_end(animate=False)

    async def _end_reply(self, text: str, message: Message, stats: ReplyStats) -> None:
        if text:
            await self._stream.write(text)
        await self._stream.stop()
        if self.streaming is not None:
            self.streaming.finish(message)
        self.streaming = None
        tps = f"{stats.decode_tps:.1f} tok/s" if stats.decode_tps else "-"
        ttft = f"{stats.ttft_ms:.0f} ms" if stats.ttft_ms is not None else "-"
        dropped = f" · dropped {stats.dropped_turns} old messages" if stats.dropped_turns else ""
        icl = message.provenance.get("icl")
        examples = f" (+{icl['example_tokens']} for {len(icl['examples'])} examples)" if icl else ""
        self._status(
            f"{stats.prompt_tokens} prompt{examples} + {stats.completion_tokens} tokens · TTFT {ttft} · {tps} · "
            f"{stats.finish_reason}{dropped}"
        )
        self.query_one(ContextPanel).show_reply(message.provenance)
        if stats.dropped_turns:
            self.notify(f"dropped the {stats.dropped_turns} oldest messages to fit the context window")
        if stats.error:
            self.notify(f"{stats.error} (the reply so far is kept, marked interrupted)", severity="error")
        self.query_one("#messages", VerticalScroll).scroll_end(animate=False)

    # -- copying and rating ---------------------------------------------------------------------
    def target_reply(self) -> MessageView | None:
        """The focused message, else the last reply: what copy and the rating keys act on."""
        focused = self.focused if isinstance(self.focused, MessageView) else None
        views = [v for v in self.query(MessageView) if v.role == "assistant"]
        return focused or (views[-1] if views else None)

    def action_rate(self, rating: str | None) -> None:
        """+ / - rate the focused (or last) reply 👍 / 👎; 0 removes the rating. Rating again replaces it."""
        view = self.target_reply()
        if view is None or view.role != "assistant" or view.message is None:
            self.notify("no finished reply to rate", severity="warning")
            return
        self.service.rate(view.message.id, rating)
        view.show_rating(rating)
        self.notify({"up": "rated 👍", "down": "rated 👎"}.get(rating or "", "rating removed"))

    def action_copy_message(self) -> None:
        target = self.target_reply()
        if target is None:
            self.notify("nothing to copy yet", severity="warning")
            return
        self.app.copy_to_clipboard(target.text)
        self.notify(f"copied {len(target.text)} characters")

    # -- tokens ---------------------------------------------------------------------------------
    def action_tokens(self) -> None:
        """t: the focused (or last) reply's prompt as sent, with its token boundaries and each part's cost."""
        view = self.target_reply()
        if view is None or view.role != "assistant" or view.message is None:
            self.notify("no finished reply to show the tokens of", severity="warning")
            return
        self.show_tokens(view.message.id)

    @work(thread=True, group="tokens", exit_on_error=False)
    def show_tokens(self, message_id: int) -> None:
        """In a thread: the first use loads the model."""
        try:
            view = self.service.prompt_view(message_id)
        except TunelabError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self.app.push_screen, TokensScreen(view))
