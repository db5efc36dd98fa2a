"""The tunelab Textual app: it owns the services and opens the screens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from textual.app import App
from textual.binding import Binding

from tunelab.config import Settings
from tunelab.runtime.chat_service import ChatService
from tunelab.runtime.feedback import FeedbackService
from tunelab.runtime.runtime import Runtime
from tunelab.tui.screens.chat import ChatScreen
from tunelab.tui.screens.compare import CompareScreen
from tunelab.tui.screens.feedback import FeedbackScreen


class TunelabApp(App[None]):
    CSS_PATH = Path(__file__).with_name("tunelab.tcss")  # absolute: subclasses elsewhere find it too
    TITLE = "tunelab"
    BINDINGS = [
        Binding("f1", "toggle_help", "Keys", id="app.help"),
        Binding("f3", "open_compare", "Compare", id="app.compare"),
        Binding("f4", "open_train", "Train", id="app.train"),
        Binding("f5", "open_feedback", "Feedback", id="app.feedback"),
    ]

    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        super().__init__()
        self.settings = settings
        self.conn = conn
        self.runtime = Runtime(settings, conn)
        """The process's one runtime: chat, compare and best-of share its engine and caches."""
        self.chat_service = ChatService(self.runtime)

    def on_mount(self) -> None:
        self.set_keymap(self.settings.keymap)
        self.push_screen(ChatScreen(self.chat_service))

    def action_open_compare(self) -> None:
        """F3: arms side by side on one prompt, blind votes, and the last comparison report."""
        if not isinstance(self.screen, CompareScreen):
            self.push_screen(CompareScreen(self.runtime))

    def action_open_feedback(self) -> None:
        """F5: the ratings and votes, their counts per model and adapter, delete and export."""
        if not isinstance(self.screen, FeedbackScreen):
            self.push_screen(FeedbackScreen(FeedbackService(self.settings, self.conn)))

    def action_open_train(self) -> None:
        """F4: LoRA fine-tuning runs on a bank, with live progress, a loss plot, cancel and resume."""
        from tunelab.tui.screens.train import TrainScreen  # pulls in transformers: only when F4 is pressed

        if not isinstance(self.screen, TrainScreen):
            self.push_screen(TrainScreen(self.settings, self.conn, runtime=self.runtime))

    def action_toggle_help(self) -> None:
        """F1 shows every key of the current screen with its description."""
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()
