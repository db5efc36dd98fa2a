"""The compare screen and report viewer driven by Textual's Pilot, on the real model, bank and database."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static

from tunelab.engine.compare import Engines
from tunelab.engine.summary import summarize
from tunelab.stores.comparisons import ComparisonItem, ComparisonStore, ItemResult
from tunelab.stores.feedback import FeedbackStore
from tunelab.tui.app import TunelabApp
from tunelab.tui.screens.compare import CompareScreen
from tunelab.tui.screens.compare_report import ReportScreen
from tunelab.stores.reports import write_report
from tunelab.tui.widgets.compare.arm_column import ArmColumn

SIZE = (140, 44)


class CompareApp(TunelabApp):
    """The real app, opening the compare screen on the session's already-loaded engine."""

    def __init__(self, settings, conn, engine) -> None:
        super().__init__(settings, conn)
        self.compare_engines = Engines(settings, conn, base=engine)

    def on_mount(self) -> None:
        self.push_screen(CompareScreen(self.settings, self.conn, self.compare_engines, seed=3))


async def type_text(pilot, text: str) -> None:
    for key in text:
        await pilot.press(key if key != " " else "space")


def write_small_report(settings, conn):
    """A finished two-arm comparison written through the real store, summary and report writer."""
    store = ComparisonStore(conn)
    items = [ComparisonItem(i, str(i), f"review number {i}", ("negative", "positive")[i % 2]) for i in range(6)]
    comparison = store.open("demo", "k", {"test_source": "constructed"}, items, ["base", "base+jaccard@2"])
    for arm, right in (("base", {0, 1}), ("base+jaccard@2", {0, 1, 2, 3, 5})):
        for item in items:
            hit = float(item.position in right)
            output = item.reference if hit else "no idea"
            store.add_result(comparison.id, "fp", ItemResult(arm, item.position, output, {"accuracy": hit, "chrf": hit, "rouge_l": hit},
                                                              30, 2, 15.0, 40.0, 50.0, "stop"))
    summary = summarize(store.get(comparison.id), items, store.results(comparison.id), "accuracy")
    path = write_report(settings, summary)
    store.finish(comparison.id, str(path))
    return path


async def test_report_viewer_shows_table_items_and_plot(settings, conn):
    write_small_report(settings, conn)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(ReportScreen(ComparisonStore(conn).latest_done().report_dir))
        await pilot.pause()
        await pilot.pause()
        screen = app.screen
        arms = screen.query_one("#report-arms", DataTable)
        items = screen.query_one("#report-items", DataTable)
        assert arms.row_count >= 2 and items.row_count >= 1
        assert "plot.png" in str(screen.query_one("#report-png").render())
        items.focus()
        await pilot.press("down")
        await pilot.pause()
        assert "reference" in str(screen.query_one("#report-detail", Static).render())
        await pilot.press("escape")
        assert not isinstance(app.screen, ReportScreen)
