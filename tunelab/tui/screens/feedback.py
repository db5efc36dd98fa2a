"""The Feedback screen (F5): every current rating, filtered by 👍/👎 and adapter, counts per model
and adapter, delete, and export in the trainers' formats to a file under the data dir."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Select, Static

from tunelab.errors import TunelabError
from tunelab.runtime.feedback import FORMATS, FeedbackService
from tunelab.text import one_line

if TYPE_CHECKING:
    from tunelab.stores.feedback import Rating

BASE = "(base)"
"""The adapter filter's label for replies of the plain base model (stored as no adapter)."""


class FeedbackScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="feedback.back"),
        Binding("delete,d", "delete_rating", "Delete", id="feedback.delete"),
        Binding("e", "export", "Export", id="feedback.export"),
        Binding("r", "refresh", "Refresh", id="feedback.refresh"),
    ]

    def __init__(self, feedback: FeedbackService) -> None:
        super().__init__()
        self.feedback = feedback
        self.shown: list[Rating] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="feedback-filters"):
            yield Select([("👍 up", "up"), ("👎 down", "down")], prompt="any rating", id="feedback-rating")
            yield Select([], prompt="any adapter", id="feedback-adapter")
            yield Select([(fmt, fmt) for fmt in FORMATS], value="kto", allow_blank=False, id="feedback-format")
        with Vertical(id="feedback-main"):
            yield DataTable(id="feedback-ratings", cursor_type="row")
            yield Label("per model and adapter", classes="section")
            yield DataTable(id="feedback-counts", cursor_type="none")
            yield Static("", id="feedback-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "ratings and A/B votes"
        ratings = self.query_one("#feedback-ratings", DataTable)
        ratings.add_columns("id", "", "adapter / arm", "prompt", "reply", "reason")
        self.query_one("#feedback-counts", DataTable).add_columns("model", "adapter / arm", "👍", "👎", "pairs")
        self.action_refresh()
        ratings.focus()

    def filters(self) -> tuple[str | None, str | None]:
        rating = self.query_one("#feedback-rating", Select).value
        adapter = self.query_one("#feedback-adapter", Select).value
        return (
            None if rating is Select.NULL else str(rating),
            None if adapter is Select.NULL else ("" if adapter == BASE else str(adapter)),
        )

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "feedback-format":
            self.show_ratings()

    def action_refresh(self) -> None:
        counts = self.feedback.counts()
        table = self.query_one("#feedback-counts", DataTable)
        table.clear()
        for c in counts:
            table.add_row((c.model_sha256 or "-")[:12], c.adapter or BASE, c.up, c.down, c.pairs)
        adapters = sorted({r.snapshot.adapter or BASE for r in self.feedback.ratings()})
        select = self.query_one("#feedback-adapter", Select)
        current = select.value
        select.set_options([(a, a) for a in adapters])
        if current in adapters:
            select.value = current
        self.show_ratings()

    def show_ratings(self) -> None:
        rating, adapter = self.filters()
        self.shown = self.feedback.ratings(rating=rating, adapter=adapter)
        table = self.query_one("#feedback-ratings", DataTable)
        table.clear()
        for r in self.shown:
            mark = "👍" if r.rating == "up" else "👎"
            table.add_row(
                r.id,
                mark,
                r.snapshot.adapter or r.snapshot.arm or BASE,
                one_line(r.snapshot.prompt[-1]["content"], 40),
                one_line(r.snapshot.reply, 50),
                r.reason,
                key=str(r.id),
            )
        tally = self.feedback.vote_tally()
        self.query_one("#feedback-status", Static).update(
            f"{len(self.shown)} rating(s) shown · {tally.votes} A/B vote(s), {tally.decisive} with a winner"
        )

    def selected(self) -> Rating | None:
        table = self.query_one("#feedback-ratings", DataTable)
        if not self.shown or table.cursor_row < 0:
            return None
        return self.shown[min(table.cursor_row, len(self.shown) - 1)]

    def action_delete_rating(self) -> None:
        rating = self.selected()
        if rating is None:
            self.notify("no rating selected", severity="warning")
            return
        self.feedback.delete(rating.id)
        self.notify(f"deleted rating {rating.id}")
        self.action_refresh()

    def action_export(self) -> None:
        fmt = str(self.query_one("#feedback-format", Select).value)
        try:
            n, path = self.feedback.export(fmt)
        except TunelabError as exc:
            self.notify(str(exc), severity="error")
            return
        self.query_one("#feedback-status", Static).update(f"exported {n} {fmt} row(s) to {path}")
        self.notify(f"exported {n} row(s) to {path}")
