"""The report viewer on a learning-curve report (baseline rows, confusion matrices, the curve plot) and a
curve run started from the compare screen (ctrl+l) on the real model, with its progress and report."""

from __future__ import annotations

from test_curve import PLACES, _constructed
from textual.widgets import DataTable, Static

from tunelab.eval.curve_summary import curve_summary
from tunelab.eval.report import write_report
from tunelab.runtime.runtime import Runtime
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore
from tunelab.stores.comparisons import ComparisonStore
from tunelab.tui.app import TunelabApp
from tunelab.tui.screens.compare import CompareScreen
from tunelab.tui.screens.compare_report import ReportScreen
from tunelab.tui.widgets.compare.curve_plot import CurvePlot

SIZE = (140, 44)


async def test_report_viewer_shows_baselines_and_the_curve(settings, conn):
    summary = _constructed(conn)
    summary.curve = curve_summary(summary, PLACES)
    path = write_report(settings, summary)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(ReportScreen(path))
        await pilot.pause()
        screen = app.screen
        arms = screen.query_one("#report-arms", DataTable)
        rows = [arms.get_row_at(i) for i in range(arms.row_count)]
        assert rows[0][0] == "majority: always negative" and rows[0][1] == "50.0%"
        assert rows[1][0].startswith("uniform chance") and len(rows) == 2 + len(summary.arms)
        base = next(r for r in rows if r[0] == "base")
        assert base[-1].startswith("not above")
        assert screen.query(CurvePlot) and "curve.png" in str(screen.query_one("#report-png").render())
        assert "Crossover at n=16" in str(screen.query_one("#report-verdict", Static).render())
        assert "(not a label)" in str(screen.query_one("#report-baselines", Static).render())


async def test_compare_screen_runs_a_curve_in_a_worker_and_opens_its_report(settings, conn, engine):
    rows = [ExampleRow(f"review {i}: {'great' if i % 2 else 'awful'} film", ("negative", "positive")[i % 2], i) for i in range(12)]
    BankStore(conn).create("mini", rows, instruction="Answer positive or negative.", test_size=0.25)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(CompareScreen(Runtime(settings, conn, engine=engine)))
        await pilot.pause()
        screen = app.screen
        screen.query_one("#compare-curve").value = "ks=0,1 selectors=jaccard sizes= limit=2"
        await pilot.press("ctrl+l")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ReportScreen) and app.screen.query(CurvePlot)
        status = str(screen.query_one("#compare-curve-status", Static).render())
        assert "learning curve done" in status and "generated 4, reused 0 answer(s)" in status
        (comparison,) = ComparisonStore(conn).list()
        assert comparison.status == "done" and comparison.arms == ["base", "base+jaccard@1"]
