"""One message in the chat log: a role line and the Markdown body (streamed for replies)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Label, Markdown, Static

if TYPE_CHECKING:
    from tunelab.stores.conversations import Message


class MessageView(Vertical, can_focus=True):
    """Focusable so a message can be picked for copying (and rating)."""

    def __init__(self, role: str, content: str = "", message: Message | None = None) -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self.message = message
        self.rating: str | None = None
        """The reply's current 👍/👎 ("up" / "down"), shown in its footer."""
        self._initial = content

    def compose(self) -> ComposeResult:
        yield Label(self.role, classes="role")
        if (steps := self._steps_view()) is not None:
            yield steps
        yield Markdown(self._initial)
        meta = Label(self._footer_text(), classes="meta")
        meta.display = bool(self._footer_text())
        yield meta

    @property
    def body(self) -> Markdown:
        return self.query_one(Markdown)

    @property
    def text(self) -> str:
        return self.message.content if self.message else self._initial

    def finish(self, message: Message) -> None:
        """Attach the stored message once the reply is saved (for copy, rating and stats)."""
        self.message = message
        if (steps := self._steps_view()) is not None and not self.query(".steps"):
            self.mount(steps, before=self.body)
        meta = self.query_one(".meta", Label)
        meta.update(self._footer_text())
        meta.display = bool(self._footer_text())

    def show_rating(self, rating: str | None) -> None:
        self.rating = rating
        if self.is_mounted:
            meta = self.query_one(".meta", Label)
            meta.update(self._footer_text())
            meta.display = bool(self._footer_text())

    def _steps_view(self) -> Collapsible | None:
        """A planned reply's plan and step results, folded above the answer (None for one-call replies)."""
        steps = (self.message.provenance.get("steps") if self.message else None) or []
        if not steps:
            return None
        tokens = sum(step["prompt_tokens"] + step["completion_tokens"] for step in steps)
        lines = [f"{step['kind']}: {step['output']}" for step in steps]
        title = f"plan and steps: {len(steps)} calls, {tokens} tokens before the answer"
        return Collapsible(Static("\n\n".join(lines), markup=False), title=title, collapsed=True, classes="steps")

    def _footer_text(self) -> str:
        m = self.message
        if m is None or m.role != "assistant":
            return ""
        tps = f" · {m.decode_tps:.1f} tok/s" if m.decode_tps else ""
        flag = " · interrupted" if m.interrupted else ""
        rated = {"up": " · 👍", "down": " · 👎"}.get(self.rating or "", "")
        return f"#{m.id} · {m.prompt_tokens} + {m.completion_tokens} tokens{tps} · {m.finish_reason}{flag}{rated}"
