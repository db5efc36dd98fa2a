"""SVG snapshots of the compare, feedback, report and chat-with-ICL screens (pytest-textual-snapshot).

Replies come from the bundled model with greedy sampling and few tokens, so they repeat; what a
screen shows that depends on the clock or the temp dir (TTFT, tok/s, selection ms, the report's
path) is masked in `run_before`, and toasts are cleared, before the screenshot."""

from __future__ import annotations

import re

import pytest
from feedback_support import rate
from test_tui_compare import mini_bank, run_round, write_small_report
from test_tui_icl import tiny_icl_chat
from textual.widgets import Input, Label, Select, Static

from tunelab.stores.comparisons import ComparisonStore
from tunelab.stores.feedback import FeedbackStore, PreferenceVote
from tunelab.tui.app import TunelabApp
from tunelab.tui.screens.compare_report import ReportScreen
from tunelab.tui.screens.feedback import FeedbackScreen
from tunelab.tui.widgets.chat.message_view import MessageView
from tunelab.tui.widgets.compare.arm_column import ArmColumn

COMPARE_SIZE = (140, 44)
TIMING = re.compile(r"\d+(?:\.\d+)? (ms|tok/s)")


def masked(widget: Static) -> None:
    """Replace the clock-dependent numbers in a label with '-', keeping the token counts."""
    widget.update(TIMING.sub(r"- \1", str(widget.render())))


@pytest.fixture
def short_arena_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few greedy tokens per arm: the columns fill quickly and the same way on every run."""
    monkeypatch.setattr("tunelab.tui.screens.compare.ARENA_MAX_TOKENS", 12)


def compare_round(settings, conn, engine, seen: dict, vote: str | None = None):
    """run_before for a blind round on `mini`: titles before (and after `vote`), timings masked."""

    async def before(pilot) -> None:
        app = pilot.app
        screen = await run_round(app, pilot, settings, conn, engine, "review: a great film")
        seen["before"] = [str(c.query_one(".arm-title").render()) for c in screen.query(ArmColumn)]
        seen["arms"] = [arm.name for arm in screen.round.arms]
        if vote:
            await pilot.press(vote)
            await pilot.pause()
            seen["after"] = [str(c.query_one(".arm-title").render()) for c in screen.query(ArmColumn)]
        for stats in screen.query(".arm-stats").results(Label):
            masked(stats)
        app.clear_notifications()
        await pilot.pause()

    return before


def test_snapshot_compare_blind_round_before_the_vote(snap_compare, settings, conn, engine, short_arena_replies):
    mini_bank(conn)
    seen: dict = {}
    before = compare_round(settings, conn, engine, seen)
    assert snap_compare(TunelabApp(settings, conn), terminal_size=COMPARE_SIZE, run_before=before)
    assert seen["before"] == ["Model A", "Model B"]  # blind: the arm names are hidden
    assert sorted(seen["arms"]) == ["base", "base+jaccard@2"]
    assert FeedbackStore(conn).votes() == []


def test_snapshot_compare_blind_round_after_the_vote(snap_compare, settings, conn, engine, short_arena_replies):
    mini_bank(conn)
    seen: dict = {}
    before = compare_round(settings, conn, engine, seen, vote="f6")
    assert snap_compare(TunelabApp(settings, conn), terminal_size=COMPARE_SIZE, run_before=before)
    assert seen["before"] == ["Model A", "Model B"]
    assert seen["after"] == seen["arms"]  # the vote reveals each column's arm
    (stored,) = FeedbackStore(conn).votes()
    assert stored.choice == "a" and [stored.a_arm, stored.b_arm] == seen["arms"]


def test_snapshot_feedback_screen_with_ratings_and_a_vote(snap_compare, settings, conn):
    rate(conn, "Review: a joyful ride\nIs this review fresh or rotten?", "This review is fresh.", "up")
    rate(conn, "Review: a tedious slog\nIs this review fresh or rotten?", "This review is fresh.", "down")
    question = [{"role": "user", "content": "review: a great film"}]
    FeedbackStore(conn).vote(PreferenceVote(question, "positive", "negative", "a", "base+jaccard@2", "base", "base-sha"))
    seen: dict = {}

    async def before(pilot) -> None:
        await pilot.press("f5")
        await pilot.pause()
        screen = pilot.app.screen
        seen["screen"] = screen
        seen["status"] = str(screen.query_one("#feedback-status", Static).render())
        seen["rows"] = screen.query_one("#feedback-ratings").row_count

    assert snap_compare(TunelabApp(settings, conn), terminal_size=(120, 36), run_before=before)
    assert isinstance(seen["screen"], FeedbackScreen)
    assert seen["rows"] == 2 and seen["status"] == "2 rating(s) shown · 1 A/B vote(s), 1 with a winner"


def test_snapshot_report_viewer_on_a_small_comparison(snap_compare, settings, conn):
    write_small_report(settings, conn)
    report_dir = ComparisonStore(conn).latest_done().report_dir
    seen: dict = {}

    async def before(pilot) -> None:
        await pilot.app.push_screen(ReportScreen(report_dir))
        await pilot.pause()
        screen = pilot.app.screen
        png = screen.query_one("#report-png", Label)
        seen["png"] = str(png.render())
        png.update(seen["png"].replace(str(settings.home), "$TUNELAB_HOME"))  # the temp dir differs per run
        seen["arms"] = screen.query_one("#report-arms").row_count

    assert snap_compare(TunelabApp(settings, conn), terminal_size=COMPARE_SIZE, run_before=before)
    assert seen["png"].endswith("plot.png") and seen["arms"] >= 2


def test_snapshot_chat_with_the_icl_context_panel_filled(snap_compare, settings, conn):
    tiny_icl_chat(conn)
    seen: dict = {}

    async def before(pilot) -> None:
        app = pilot.app
        screen = app.screen
        await pilot.click("#icl-on")
        screen.query_one("#icl-selector", Select).value = "jaccard"
        screen.query_one("#icl-k", Input).value = "2"
        screen.query_one("#prompt", Input).value = "I hated this tedious slog of a film"
        screen.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        reply = [v for v in screen.query(MessageView) if v.role == "assistant"][-1]
        reply.focus()  # the panel shows the focused reply's examples
        await pilot.pause()
        seen["panel"] = str(screen.query_one("#icl-examples", Static).render())
        masked(screen.query_one("#stats", Static))
        masked(reply.query_one(".meta", Label))
        app.clear_notifications()
        await pilot.pause()

    assert snap_compare(TunelabApp(settings, conn), terminal_size=(140, 36), run_before=before)
    panel = seen["panel"]
    assert panel.startswith("tiny · jaccard · k 2") and "a tedious slog" in panel and "hated the film" in panel
