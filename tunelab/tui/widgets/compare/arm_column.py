"""One arm's column in the side-by-side view: title, streamed reply, stats, and the examples it saw."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Collapsible, Label, Static

from tunelab.engine.reply import ReplyStats


class ArmColumn(Vertical):
    """Shows what it is given; the screen decides the title (a hidden "A"/"B" in blind mode)."""

    def __init__(self, title: str, **kwargs: Any) -> None:
        super().__init__(classes="arm-column", **kwargs)
        self._title = title
        self.text = ""
        self.rating: str | None = None
        """This column's reply rating ("up" / "down"), shown after the title."""

    def compose(self) -> ComposeResult:
        yield Label(self._title, classes="arm-title")
        with VerticalScroll(classes="arm-body"):
            yield Static("", classes="arm-reply")
        yield Label("waiting…", classes="arm-stats")
        with Collapsible(title="examples used", collapsed=True, classes="arm-examples"):
            yield Static("", classes="arm-example-list")

    def set_title(self, title: str) -> None:
        self._title = title
        self.query_one(".arm-title", Label).update(self._title + self._rated())

    def show_rating(self, rating: str | None) -> None:
        self.rating = rating
        self.query_one(".arm-title", Label).update(self._title + self._rated())

    def _rated(self) -> str:
        return {"up": "  👍", "down": "  👎"}.get(self.rating or "", "")

    def show_text(self, text: str) -> None:
        self.text = text
        self.query_one(".arm-reply", Static).update(Text(text))

    def show_stats(self, stats: ReplyStats, selection_ms: float) -> None:
        ttft = f"{stats.ttft_ms:.0f} ms" if stats.ttft_ms is not None else "-"
        tps = f"{stats.decode_tps:.1f} tok/s" if stats.decode_tps else "-"
        self.query_one(".arm-stats", Label).update(
            f"{stats.prompt_tokens} prompt + {stats.completion_tokens} tokens · TTFT {ttft} · {tps} · select {selection_ms:.0f} ms"
        )

    def show_examples(self, examples: list[dict[str, Any]], dropped: int) -> None:
        if not examples:
            body = Text("zero-shot: no examples")
        else:
            body = Text()
            for i, ex in enumerate(examples, 1):
                body.append(f"{i}. [{ex['score']:.3f}] ", style="bold")
                body.append(f"{ex['input'][:160]}\n   → {ex['output'][:80]}\n")
            if dropped:
                body.append(f"({dropped} dropped to fit the context)")
        self.query_one(".arm-example-list", Static).update(body)
        self.query_one(Collapsible).title = f"examples used ({len(examples)})"
