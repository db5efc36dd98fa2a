"""Left / right / tie / both-bad buttons: it posts `Voted`, the screen stores the vote."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button

CHOICES = (("left", "◀ Left is better"), ("right", "Right is better ▶"), ("tie", "Tie"), ("both_bad", "Both bad"))


class VoteBar(Horizontal):
    class Voted(Message):
        def __init__(self, vote: str) -> None:
            super().__init__()
            self.vote = vote

    def compose(self) -> ComposeResult:
        for vote, label in CHOICES:
            yield Button(label, id=f"vote-{vote}", classes="vote")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.Voted(str(event.button.id).removeprefix("vote-")))
