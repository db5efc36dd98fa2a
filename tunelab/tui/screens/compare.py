"""The side-by-side screen: one prompt, two to four arms streamed in columns, blind votes, win-rates;
and (ctrl+l) a learning-curve run on the bank, in a worker, with the grid's progress and ETA.

Arms are typed by name; `model:NAME` (a registered model or a GGUF path) puts a teacher beside its
students, on an engine of its own that the screen closes when it goes away."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Select, Static, Switch
from textual.worker import Worker, get_current_worker

from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.runtime import arena
from tunelab.runtime.arm_runner import ArmRunner, default_max_tokens, greedy
from tunelab.runtime.comparisons import ComparisonService
from tunelab.runtime.curve import CurveProgress, CurveSpec, run_curve, spec_from_text
from tunelab.runtime.runtime import Runtime
from tunelab.tui.widgets.compare.arm_column import ArmColumn
from tunelab.tui.widgets.compare.vote_bar import VoteBar
from tunelab.tui.worker_errors import report_failed_worker

FLUSH_SECONDS = 0.05
ARENA_MAX_TOKENS = 256


class CompareScreen(Screen[None]):
    BINDINGS = [
        Binding("ctrl+b", "toggle_blind", "Blind on/off", id="compare.blind"),
        Binding("ctrl+r", "open_report", "Last report", id="compare.report"),
        Binding("ctrl+l", "start_curve", "Learning curve", id="compare.curve"),
        Binding("escape", "cancel", "Stop", id="compare.cancel"),
        Binding("f6", "vote('left')", "Vote left", id="compare.vote_left"),
        Binding("f7", "vote('right')", "Vote right", id="compare.vote_right"),
        Binding("f8", "vote('tie')", "Tie", id="compare.vote_tie"),
        Binding("f9", "vote('both_bad')", "Both bad", id="compare.vote_both_bad"),
        Binding("plus", "rate('up')", "👍 column", id="compare.rate_up"),
        Binding("minus", "rate('down')", "👎 column", id="compare.rate_down"),
        Binding("0", "rate(None)", "Unrate column", id="compare.rate_clear", show=False),
    ]

    def __init__(self, runtime: Runtime, seed: int | None = None, hf_dir: Path | None = None) -> None:
        """`runtime`: the app's, so the chat's loaded model serves the arms too. `hf_dir`: an HF
        checkpoint paired with the chat model, for a curve's LoRA points (default: its dequantisation)."""
        super().__init__()
        self.runtime = runtime
        self.settings = runtime.settings
        self.comparisons = ComparisonService(runtime)
        self.rng = random.Random(seed)
        self.hf_dir = hf_dir
        self.round: arena.ArenaRound | None = None
        self._runners: dict[str, ArmRunner] = {}
        self.curve_cancel: threading.Event | None = None
        """Set while a learning curve runs (Escape sets it); None when idle."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="compare-controls"):
            yield Select([], prompt="bank", id="compare-bank")
            yield Input(placeholder="arms, e.g. base, base+jaccard@4, lora:NAME, model:TEACHER", id="compare-arms")
            yield Label("blind", classes="switch-label")
            yield Switch(value=True, id="compare-blind")
        yield Input(placeholder="Prompt to compare (Enter runs every arm; Esc stops)", id="compare-prompt")
        yield Horizontal(id="compare-columns")
        yield VoteBar(id="compare-votes")
        yield Static("", id="compare-winrates")
        yield Input(
            placeholder="learning curve (ctrl+l): e.g. ks=0,1,2,4,8 sizes=16,64,256,all seeds=3 epochs=3 limit=100", id="compare-curve"
        )
        yield Static("", id="compare-curve-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "side by side"
        banks = self.comparisons.bank_names()
        select = self.query_one("#compare-bank", Select)
        select.set_options([(name, name) for name in banks])
        if banks:
            select.value = banks[0]
        else:
            self.notify("no example bank yet: try `tunelab bank import-demo sentiment`", severity="warning")
        self.query_one("#compare-votes", VoteBar).disabled = True
        self.show_win_rates()
        self.query_one("#compare-prompt", Input).focus()

    # -- setup -----------------------------------------------------------------------------------
    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value is Select.NULL:
            return
        arms = self.comparisons.arm_choices(str(event.value))
        self.query_one("#compare-arms", Input).value = ", ".join(a.name for a in arms)

    def bank_name(self) -> str:
        value = self.query_one("#compare-bank", Select).value
        if value is Select.NULL:
            raise TunelabError("pick an example bank first (or import one: `tunelab bank import-demo sentiment`)")
        return str(value)

    def arms(self) -> list[Arm]:
        text = self.query_one("#compare-arms", Input).value
        arms = list(dict.fromkeys(Arm.parse(part) for part in text.split(",") if part.strip()))
        if len(arms) < 2:
            raise TunelabError("name at least two arms, e.g. base, base+jaccard@4")
        return arms

    def runner(self, bank: str) -> ArmRunner:
        if bank not in self._runners:
            self._runners[bank] = self.comparisons.arm_runner(bank)
        return self._runners[bank]

    def action_toggle_blind(self) -> None:
        switch = self.query_one("#compare-blind", Switch)
        switch.value = not switch.value

    # -- a round ---------------------------------------------------------------------------------
    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "compare-curve":
            self.action_start_curve()
            return
        if event.input.id != "compare-prompt":
            return
        if self.round is not None and len(self.round.replies) < len(self.round.arms):
            self.notify("replies are still streaming (Esc stops them)", severity="warning")
            return
        try:
            bank = self.bank_name()
            self.round = arena.new_round(event.value, self.arms(), self.query_one("#compare-blind", Switch).value, self.rng, bank)
        except TunelabError as exc:
            self.notify(str(exc), severity="error")
            return
        columns = self.query_one("#compare-columns", Horizontal)
        await columns.remove_children()
        widgets = [ArmColumn(self.round.title(i), id=f"arm-{i}") for i in range(len(self.round.arms))]
        await columns.mount_all(widgets)
        self.query_one("#compare-votes", VoteBar).disabled = True
        self.generate(self.round, bank, widgets)

    def action_cancel(self) -> None:
        self.workers.cancel_group(self, "compare")
        if self.curve_cancel is not None:
            self.curve_cancel.set()
            self.set_curve_status("stopping after the current step or answer (finished points are kept)…")

    # -- a learning curve ------------------------------------------------------------------------
    def set_curve_status(self, text: str) -> None:
        self.query_one("#compare-curve-status", Static).update(text)

    def action_start_curve(self) -> None:
        if self.curve_cancel is not None:
            self.notify("a learning curve is running: Escape stops it", severity="warning")
            return
        try:
            bank = self.bank_name()
            spec, limit = spec_from_text(self.query_one("#compare-curve", Input).value)
        except TunelabError as exc:
            self.notify(str(exc), severity="error")
            return
        self.curve_cancel = threading.Event()
        self.set_curve_status(f"learning curve on {bank!r}: starting (the first LoRA point dequantises the model)…")
        self.curve(bank, spec, limit, self.curve_cancel)

    @work(thread=True, exclusive=True, group="curve")
    def curve(self, bank: str, spec: CurveSpec, limit: int | None, cancel: threading.Event) -> None:
        """The whole grid off the UI thread through the CLI's `run_curve`; progress comes back per event."""
        app = self.app
        try:
            runner = self.comparisons.arm_runner(bank)
            result = run_curve(
                runner,
                self.comparisons.test_set(bank, limit),
                spec,
                greedy(default_max_tokens(runner.bank.labels)),
                self.hf_dir,
                lambda event: app.call_from_thread(self.curve_progressed, event),
                cancel,
            )
        except TunelabError as exc:
            app.call_from_thread(self.curve_finished, None, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a failed training run is recorded as failed; say why and keep the app
            app.call_from_thread(self.curve_finished, None, f"learning curve failed: {type(exc).__name__}: {exc}")
            return
        message = (
            f"learning curve done: trained {len(result.trained)}, reused {len(result.reused_adapters)} adapter(s); "
            f"generated {result.generated}, reused {result.reused_answers} answer(s)"
        )
        app.call_from_thread(self.curve_finished, result.report_dir, message)

    def curve_progressed(self, event: CurveProgress) -> None:
        self.set_curve_status(event.describe())

    def curve_finished(self, report_dir: Path | None, message: str) -> None:
        from tunelab.tui.screens.compare_report import ReportScreen

        self.curve_cancel = None
        self.set_curve_status(message)
        self.notify(message, severity="information" if report_dir else "error")
        if report_dir is not None:
            self.app.push_screen(ReportScreen(report_dir))

    def on_unmount(self) -> None:
        if self.curve_cancel is not None:
            self.curve_cancel.set()  # leaving mid-run keeps every finished point and a training checkpoint
        if not any(w.group == "compare" and w.is_running for w in self.app.workers):  # never close an engine mid-reply
            for runner in self._runners.values():
                runner.close()  # teachers' engines; the app's runtime stays loaded

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def generate(self, round_: arena.ArenaRound, bank: str, widgets: list[ArmColumn]) -> None:
        """Arms run one after another on the one engine; each column streams while its arm runs."""
        worker = get_current_worker()
        app = self.app
        try:
            runner = self.runner(bank)
            params = greedy(ARENA_MAX_TOKENS)
            for column, (arm, widget) in enumerate(zip(round_.arms, widgets)):
                app.call_from_thread(widget.show_text, "loading…" if column == 0 else "generating…")
                arm_reply = runner.start(arm, round_.prompt, params)
                app.call_from_thread(widget.show_examples, arm_reply.examples, arm_reply.dropped_examples)
                last = time.monotonic()
                try:
                    for _ in arm_reply.reply:
                        if worker.is_cancelled:
                            break
                        if time.monotonic() - last >= FLUSH_SECONDS:
                            app.call_from_thread(widget.show_text, arm_reply.reply.so_far)
                            last = time.monotonic()
                finally:
                    arm_reply.reply.close()
                round_.replies[column] = arm_reply
                app.call_from_thread(widget.show_text, arm_reply.reply.so_far)
                app.call_from_thread(widget.show_stats, arm_reply.reply.stats, arm_reply.selection_ms)
                if worker.is_cancelled:
                    return
        except TunelabError as exc:
            app.call_from_thread(self.notify, str(exc), severity="error")
            return
        app.call_from_thread(self._round_done, round_)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_failed_worker(self, event, self.settings.dirs.error_log)

    def _round_done(self, round_: arena.ArenaRound) -> None:
        votable = round_.votable
        self.query_one("#compare-votes", VoteBar).disabled = not votable
        if votable:
            self.notify("vote: which reply is better? (F6 left · F7 right · F8 tie · F9 both bad; F5 is the Feedback screen)")

    # -- voting ----------------------------------------------------------------------------------
    def on_vote_bar_voted(self, event: VoteBar.Voted) -> None:
        self.action_vote(event.vote)

    def action_vote(self, choice: str) -> None:
        round_ = self.round
        if round_ is None or not round_.votable:
            self.notify("nothing to vote on yet: run a prompt with two arms", severity="warning")
            return
        try:
            self.comparisons.record_vote(round_, choice)
        except TunelabError as exc:
            self.notify(str(exc), severity="error")
            return
        for column in range(len(round_.arms)):
            self.query_one(f"#arm-{column}", ArmColumn).set_title(round_.title(column))
        self.query_one("#compare-votes", VoteBar).disabled = True
        self.notify(f"vote saved: {choice.replace('_', ' ')} ({round_.arms[0].name} | {round_.arms[1].name})")
        self.show_win_rates()

    def action_rate(self, rating: str | None) -> None:
        """+ / - rate the reply of the column holding the focus (Tab into it) 👍 / 👎; 0 removes it."""
        column = next((w for w in (self.focused.ancestors_with_self if self.focused else []) if isinstance(w, ArmColumn)), None)
        if self.round is None or column is None or column.id is None:
            self.notify("focus a column's reply first (Tab), then + / -", severity="warning")
            return
        try:
            self.comparisons.rate_column(self.round, int(column.id.removeprefix("arm-")), rating)
        except TunelabError as exc:
            self.notify(str(exc), severity="error")
            return
        column.show_rating(rating)

    def show_win_rates(self) -> None:
        rates = self.comparisons.win_rates()
        lines = [
            f"{r.a} vs {r.b}: {r.a} wins {r.rate.value:.0%} [{r.rate.low:.0%}, {r.rate.high:.0%}] "
            f"(n={r.n}: {r.wins}W {r.losses}L {r.ties}T {r.both_bad} both bad)"
            for r in rates
        ]
        self.query_one("#compare-winrates", Static).update(
            "\n".join(lines) or "no votes yet (win-rates with 95% Wilson intervals appear here)"
        )

    # -- reports ---------------------------------------------------------------------------------
    def action_open_report(self) -> None:
        from tunelab.tui.screens.compare_report import ReportScreen

        report_dir = self.comparisons.latest_report_dir()
        if report_dir is None:
            self.notify("no finished comparison yet: run `tunelab compare --bank NAME`", severity="warning")
            return
        self.app.push_screen(ReportScreen(report_dir))
