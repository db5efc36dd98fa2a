"""The compare screen and report viewer driven by Textual's Pilot, on the real model, bank and database."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from tunelab.eval.report import write_report
from tunelab.eval.summary import summarize
from tunelab.runtime.runtime import Runtime
from tunelab.stores.comparisons import ComparisonItem, ComparisonStore, ItemResult
from tunelab.stores.feedback import FeedbackStore
from tunelab.tui.app import TunelabApp
from tunelab.tui.screens.compare import CompareScreen
from tunelab.tui.screens.compare_report import ReportScreen
from tunelab.tui.widgets.compare.arm_column import ArmColumn

SIZE = (140, 44)


async def type_text(pilot, text: str) -> None:
    for key in text:
        await pilot.press(key if key != " " else "space")


def mini_bank(conn, n: int = 8) -> None:
    from tunelab.stores.bank_files import ExampleRow
    from tunelab.stores.banks import BankStore

    rows = [ExampleRow(f"review {i}: {'great' if i % 2 else 'awful'} film", ("negative", "positive")[i % 2], i) for i in range(n)]
    BankStore(conn).create("mini", rows, instruction="Answer positive or negative.", test_size=0.0)


async def run_round(app, pilot, settings, conn, engine, prompt: str) -> CompareScreen:
    """The compare screen on the bank `mini`, two arms, one prompt sent and every worker finished."""
    await app.push_screen(CompareScreen(Runtime(settings, conn, engine=engine), seed=3))
    await pilot.pause()
    screen = app.screen
    screen.query_one("#compare-arms").value = "base, base+jaccard@2"
    screen.query_one("#compare-prompt").focus()
    await type_text(pilot, prompt)
    await pilot.press("enter")
    await app.workers.wait_for_complete()
    await pilot.pause()
    return screen


def write_small_report(settings, conn):
    """A finished two-arm comparison written through the real store, summary and report writer."""
    store = ComparisonStore(conn)
    items = [ComparisonItem(i, str(i), f"review number {i}", ("negative", "positive")[i % 2]) for i in range(6)]
    comparison = store.open("demo", "k", {"test_source": "constructed"}, items, ["base", "base+jaccard@2"])
    for arm, right in (("base", {0, 1}), ("base+jaccard@2", {0, 1, 2, 3, 5})):
        for item in items:
            hit = float(item.position in right)
            output = item.reference if hit else "no idea"
            store.add_result(
                comparison.id,
                "fp",
                ItemResult(arm, item.position, output, {"accuracy": hit, "chrf": hit, "rouge_l": hit}, 30, 2, 15.0, 40.0, 50.0, "stop"),
            )
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


async def test_blind_round_hides_names_until_the_vote_and_stores_it(settings, conn, engine):
    mini_bank(conn)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        screen = await run_round(app, pilot, settings, conn, engine, "review: a great film")
        titles = [str(c.query_one(".arm-title").render()) for c in screen.query(ArmColumn)]
        assert titles == ["Model A", "Model B"]  # blind: names hidden
        await pilot.press("f6")  # left is better
        await pilot.pause()
        revealed = [str(c.query_one(".arm-title").render()) for c in screen.query(ArmColumn)]
        assert sorted(revealed) == ["base", "base+jaccard@2"]
        (vote,) = FeedbackStore(conn).votes()
        assert vote.choice == "a" and [vote.a_arm, vote.b_arm] == revealed and vote.a_reply and vote.b_reply
        assert vote.a_snapshot["round"]["blind"] is True
        assert "wins" in str(screen.query_one("#compare-winrates", Static).render())


async def test_an_unexpected_error_in_an_arm_is_one_line_and_the_screen_stays(settings, conn, engine, monkeypatch):
    from tunelab.runtime.arm_runner import ArmRunner

    def broken(*args, **kwargs):
        raise ValueError("adapter tensor shape mismatch")

    monkeypatch.setattr(ArmRunner, "start", broken)
    mini_bank(conn, 4)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        screen = await run_round(app, pilot, settings, conn, engine, "a film")
        (shown,) = [n.message for n in app._notifications if "failed" in n.message]
        assert shown.startswith("compare failed: ValueError: adapter tensor shape mismatch")
        assert app.is_running and app.screen is screen
    assert "ValueError: adapter tensor shape mismatch" in settings.dirs.error_log.read_text(encoding="utf-8")
