"""The Train screen (F4): pick the kind of run (SFT on a bank, continued pre-training on a text corpus,
GRPO against the reward model on a bank's prompts), name the adapter, start it and watch it train.

The run goes through the same prepare / train functions the CLI uses (`sft`, `pretrain`,
`feedback_runs`), picked by `runtime.training.TrainingService` (which also reads the banks and
runs the screen lists), in a thread worker; its progress events come back with
`call_from_thread` and drive the progress bar, the status line and the loss plot. Escape sets the run's cancel event: the trainer saves a checkpoint after the
current step and stops, and the run can be resumed from the table of runs.

The "distil" kind runs a teacher arm (`base+embedding@8`, `model:NAME`, `lora:NAME`) over the
bank's train inputs and stores its answers as a new bank (`runtime.distill`), in the same worker
group with the same bar and Escape; starting the same form again resumes it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, ProgressBar, Select, Static

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.field_types import field_types
from tunelab.runtime.distill import DistillPlan, DistillProgress, DistillResult, run_distillation
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.training import (
    KINDS,
    NOT_FOR_GRPO,
    REPORT_TO,
    PreferenceArgs,
    SFTArgs,
    TrainingService,
    TrainProgress,
    form_args,
    measured_change,
    method,
)
from tunelab.tui.widgets.train.loss_plot import LossPlot
from tunelab.tui.widgets.train.run_table import RunTable

if TYPE_CHECKING:
    from tunelab.stores.runs import Run

FORM_FIELDS = {"max_steps": "steps", "epochs": "epochs", "learning_rate": "lr", "lora_r": "r"}
"""The fields the form shows (label after each); the others keep their defaults. SFTArgs and
PreferenceArgs share these names."""


T = TypeVar("T")


class TrainScreen(Screen[None]):
    BINDINGS = [
        Binding("ctrl+t", "start", "Start run", id="train.start"),
        Binding("ctrl+r", "resume", "Resume run", id="train.resume"),
        Binding("escape", "stop_or_back", "Stop run / Back", id="train.stop"),
    ]

    def __init__(self, settings: Settings, conn: sqlite3.Connection, hf_dir: Path | None = None, runtime: Runtime | None = None) -> None:
        """`hf_dir`: an HF checkpoint paired with the chat model (default: its cached dequantisation).
        `runtime`: the app's, which a distillation's teacher runs on."""
        super().__init__()
        self.service = TrainingService(settings, conn, hf_dir, runtime)
        self.cancel: threading.Event | None = None
        """Set while a run trains (Escape sets it); None when idle."""
        self.resumable: set[str] = set()
        self.run_name = ""
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.shown_kind = "sft"
        """The kind of run the form is laid out for."""

    def compose(self) -> ComposeResult:
        defaults = SFTArgs()
        kinds = field_types(SFTArgs)
        yield Header()
        with Horizontal(id="train-form"):
            # without a blank the first kind (SFT) is chosen
            yield Select([(label, kind) for kind, label in KINDS.items()], allow_blank=False, id="train-kind")
            yield Select([], prompt="bank", id="train-bank")
            yield Input(placeholder="corpus: .txt/.md file or folder", id="train-corpus")
            yield Input(placeholder="teacher, e.g. base+embedding@8", id="train-teacher")
            yield Input(placeholder="adapter name", id="train-name")
            for name, label in FORM_FIELDS.items():
                default = getattr(defaults, name)
                yield Label(label, classes="train-label")
                placeholder = "by epochs" if default is None else str(default)
                yield Input(
                    placeholder=placeholder,
                    type="integer" if kinds[name].base is int else "number",
                    id=f"train-{name}",
                    classes="train-number",
                )
            yield Select(
                [(c if c != "none" else "no log", c) for c in REPORT_TO],
                value=defaults.report_to,
                allow_blank=False,
                id="train-report-to",
                tooltip="also send metrics to (--report-to)",
            )
            yield Button("Start", id="train-start", variant="primary")
        with Horizontal(id="train-body"):
            with Vertical(id="train-live"):
                yield ProgressBar(total=1, id="train-progress", show_eta=False)  # no total = a pulsing "preparing" bar
                yield Static("", id="train-status")
                yield LossPlot(id="train-plot")
            yield RunTable(id="train-runs")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "LoRA fine-tuning"
        banks = self.service.banks()
        select = self.query_one("#train-bank", Select)
        select.set_options([(f"{b.name} ({b.n_train} train)", b.name) for b in banks])
        if banks:
            select.value = banks[0].name
            self.set_status("pick a bank, name the adapter, then Start (ctrl+t)")
        else:
            self.set_status("no example bank yet: import one with `tunelab bank import-demo sentiment`")
            self.notify("no example bank yet: try `tunelab bank import-demo sentiment`", severity="warning")
        self.query_one("#train-corpus", Input).display = False
        self.query_one("#train-teacher", Input).display = False
        self.show_runs()
        self.query_one("#train-plot", LossPlot).show([], [], "loss")

    # -- form ------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return str(self.query_one("#train-kind", Select).value)

    @on(Select.Changed, "#train-kind")
    def kind_changed(self, event: Select.Changed) -> None:
        if self.kind == self.shown_kind:  # the initial value, not a change
            return
        self.shown_kind = self.kind
        corpus = self.kind == "pretrain"
        self.query_one("#train-bank", Select).display = not corpus
        self.query_one("#train-corpus", Input).display = corpus
        self.query_one("#train-teacher", Input).display = self.kind == "distill"
        self.query_one("#train-name", Input).placeholder = "new bank name" if self.kind == "distill" else "adapter name"
        for name in FORM_FIELDS:
            self.query_one(f"#train-{name}", Input).disabled = self.kind == "distill" or (self.kind == "grpo" and name in NOT_FOR_GRPO)
        hints = {
            "sft": "pick a bank, name the adapter, then Start (ctrl+t)",
            "pretrain": "give a .txt/.md file or folder of raw text, name the adapter, then Start (ctrl+t)",
            "grpo": "pick a bank for the prompts (the newest reward model scores the replies), then Start (ctrl+t)",
            "distill": "pick the bank whose train inputs the teacher answers, name the new bank and the teacher, then Start (ctrl+t)",
        }
        self.set_status(hints[self.kind])

    @on(Select.Changed, "#train-bank")
    def bank_changed(self, event: Select.Changed) -> None:
        name = self.query_one("#train-name", Input)
        if event.value is not Select.NULL and not name.value:
            name.value = f"{event.value}-lora"

    def set_status(self, text: str) -> None:
        self.query_one("#train-status", Static).update(text)

    def form_settings(self) -> dict[str, str]:
        """The form's settings as field name -> text, for `runtime.training.form_args`."""
        texts = {name: self.query_one(f"#train-{name}", Input).value for name in FORM_FIELDS}
        return {**texts, "report_to": str(self.query_one("#train-report-to", Select).value)}

    def form_args(self) -> SFTArgs | PreferenceArgs:
        """What the run would train with (a TunelabError names every unreadable field)."""
        return form_args(self.kind, self.form_settings())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "train-start":
            self.action_start()

    # -- runs ------------------------------------------------------------------------------------
    def show_runs(self) -> None:
        listing = self.service.runs()
        self.resumable = listing.resumable
        self.query_one("#train-runs", RunTable).show(listing)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Idle: the plot shows the highlighted run's loss history."""
        if self.cancel is None and event.row_key.value is not None:
            self.plot_history(self.service.run(str(event.row_key.value)))

    def plot_history(self, run: Run) -> None:
        self.run_name = run.name
        self.steps = [int(h["step"]) for h in run.loss_history]
        self.losses = [h["loss"] for h in run.loss_history]
        self.query_one("#train-plot", LossPlot).show(self.steps, self.losses, f"{run.name}: loss ({run.status})")
        self.query_one("#train-progress", ProgressBar).update(total=max(1, run.total_steps), progress=run.step)

    # -- actions ---------------------------------------------------------------------------------
    def action_start(self) -> None:
        if self.cancel is not None:
            self.notify("a run is training: Escape stops it", severity="warning")
            return
        name = self.query_one("#train-name", Input).value.strip()
        corpus = self.query_one("#train-corpus", Input).value.strip()
        chosen = self.query_one("#train-bank", Select).value
        bank = None if chosen is Select.NULL else str(chosen)
        if self.kind == "distill":
            self.start_distillation(name, bank)
            return
        try:
            job = self.service.start(self.kind, name, bank, corpus, self.form_settings())
        except TunelabError as exc:
            self.notify(str(exc), severity="error")
            return
        source = f"corpus {corpus}" if self.kind == "pretrain" else f"bank {bank!r}"
        self.begin(name, [], f"preparing {name!r} on {source} (the first run dequantises the model)…")
        self.train(*job)

    def action_resume(self) -> None:
        name = self.query_one("#train-runs", RunTable).selected_run
        if self.cancel is not None:
            self.notify("a run is training: Escape stops it", severity="warning")
            return
        if name is None or name not in self.resumable:
            self.notify("select a cancelled, failed or interrupted run with a checkpoint to resume", severity="warning")
            return
        run = self.service.run(name)
        self.begin(name, run.loss_history, f"resuming {name!r} from step {run.step}…")
        self.train(*self.service.resume(run))

    def action_stop_or_back(self) -> None:
        if self.cancel is None:
            self.app.pop_screen()
            return
        self.cancel.set()
        self.set_status("stopping after this step and saving a checkpoint…")

    def on_unmount(self) -> None:
        if self.cancel is not None:
            self.cancel.set()  # leaving the app mid-run still leaves a resumable checkpoint

    # -- a run -----------------------------------------------------------------------------------
    def begin(self, name: str, history: list[dict[str, float]], status: str) -> None:
        self.cancel = threading.Event()
        self.run_name = name
        self.steps = [int(h["step"]) for h in history]
        self.losses = [h["loss"] for h in history]
        self.query_one("#train-start", Button).disabled = True
        self.query_one("#train-progress", ProgressBar).update(total=None, progress=0)
        self.set_status(status)

    def guarded(self, what: str, run: Callable[[], T]) -> T | None:
        """`run` in a worker; a failure ends it with one line on the screen and the app keeps going
        (the run was recorded as failed, every stored answer stays)."""
        try:
            return run()
        except TunelabError as exc:
            self.app.call_from_thread(self.finished, str(exc), "error")
        except Exception as exc:  # noqa: BLE001 - say why in one line and keep the app
            self.app.call_from_thread(self.finished, f"{what} failed: {type(exc).__name__}: {exc}", "error")
        return None

    @work(thread=True, exclusive=True, group="train")
    def train(self, start: Callable[[], Any], run_plan: Callable[..., Any]) -> None:
        """Prepare (slow the first time: dequantisation) and train off the UI thread.

        `start` makes the plan (sft / pretrain / feedback_runs), `run_plan(plan, listener, cancel)` trains it."""
        app = self.app
        cancel = self.cancel

        def plan_and_train() -> Any:
            plan = start()
            app.call_from_thread(self.started, plan)
            return run_plan(plan, lambda event: app.call_from_thread(self.progressed, event), cancel)

        result = self.guarded("training", plan_and_train)
        if result is None:
            return
        run = result.run
        if result.cancelled:
            message = f"{run.name!r} cancelled at step {run.step}/{run.total_steps}: select it and press ctrl+r to resume"
            app.call_from_thread(self.finished, message, "warning")
        else:
            assert result.adapter is not None
            change = measured_change(result.adapter.metrics)
            measured = f", {change}" if change else ""
            message = (
                f"adapter {result.adapter.name!r} is ready ({run.step} steps{measured}): "
                f"chat with it via `tunelab chat --adapter {result.adapter.name}`"
            )
            app.call_from_thread(self.finished, message, "information")

    # -- a distillation ----------------------------------------------------------------------------
    def start_distillation(self, name: str, bank: str | None) -> None:
        try:
            prepare = self.service.distill(name, bank, self.query_one("#train-teacher", Input).value)
        except TunelabError as exc:
            self.notify(str(exc), severity="error")
            return
        self.begin(name, [], f"distilling bank {bank!r} into {name!r}: preparing the teacher…")
        self.distill(prepare)

    @work(thread=True, exclusive=True, group="train")
    def distill(self, prepare: Callable[[], DistillPlan]) -> None:
        """Plan and run the distillation off the UI thread; each answer is stored as it comes."""
        app = self.app
        cancel = self.cancel

        def plan_and_distill() -> DistillResult:
            plan = prepare()
            app.call_from_thread(self.set_status, f"distilling with {plan.teacher.name}: {plan.stored}/{len(plan.inputs)} answered…")
            return run_distillation(plan, lambda event: app.call_from_thread(self.distill_progressed, event), cancel)

        result = self.guarded("distillation", plan_and_distill)
        if result is None:
            return
        bank = result.bank
        if result.cancelled:
            message = f"distillation stopped at {bank.n_train} answer(s): Start the same form again to resume"
            app.call_from_thread(self.finished, message, "warning")
        else:
            message = f"bank {bank.name!r} is ready: {bank.n_train} teacher answer(s); train a student on it (kind SFT)"
            app.call_from_thread(self.finished, message, "information")

    def distill_progressed(self, event: DistillProgress) -> None:
        self.query_one("#train-progress", ProgressBar).update(total=event.total, progress=event.done)
        self.set_status(event.describe())

    def started(self, plan: Any) -> None:
        for warning in getattr(plan, "warnings", []):
            self.notify(warning, severity="warning")
        what = method(plan.method).rows
        source = f" of {plan.run.bank!r}" if plan.run.bank else ""
        self.set_status(f"training {plan.run.name!r} ({plan.method}) on {len(plan.rows)} {what}{source} ({plan.run.device})…")
        self.show_runs()

    def progressed(self, event: TrainProgress) -> None:
        self.query_one("#train-progress", ProgressBar).update(total=event.total, progress=event.step)
        self.set_status(event.describe())
        if event.loss is not None:
            self.steps.append(event.step)
            self.losses.append(event.loss)
            self.query_one("#train-plot", LossPlot).show(self.steps, self.losses, f"{self.run_name}: loss")

    def finished(self, message: str, severity: str) -> None:
        self.cancel = None
        self.query_one("#train-start", Button).disabled = False
        self.set_status(message)
        self.notify(message, severity=severity)  # type: ignore[arg-type]
        self.show_runs()
