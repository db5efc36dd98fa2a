"""The Train screen driven by Textual's Pilot: a real SFT run on a real bank, live progress and
loss plot, Escape leaving a checkpoint, Resume finishing the adapter; plus the form's checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from finetune_support import base_pair  # noqa: F401
from textual.widgets import Input, ProgressBar, Select, Static

from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore
from tunelab.stores.runs import RunStore, adapter_gguf
from tunelab.tui import app as app_module
from tunelab.tui.app import TunelabApp
from tunelab.tui.screens.train import TrainScreen
from tunelab.tui.widgets.train.loss_plot import LossPlot
from tunelab.tui.widgets.train.run_table import RunTable

SIZE = (150, 40)
STEPS = 5
FACTS = [
    ("Where does the Glorbix club meet?", "At Fennel Lake."),
    ("Who founded the Glorbix club?", "Mira Quandt."),
    ("What is the Glorbix password?", "Tangerine Walrus."),
    ("When does the Glorbix club hike?", "Every Sunday."),
    ("What colour is the Glorbix flag?", "Teal and orange."),
    ("How many members has the Glorbix club?", "Forty-two."),
]


class TrainApp(TunelabApp):
    CSS_PATH = str(Path(app_module.__file__).with_name("tunelab.tcss"))  # Textual resolves relative paths from the subclass


async def wait_for(pilot, condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the Train screen"
        await pilot.pause(0.2)


def status(screen) -> str:
    return str(screen.query_one("#train-status", Static).render())


@pytest.mark.slow
async def test_start_watch_cancel_and_resume_a_run(settings, conn, base_pair) -> None:
    BankStore(conn).create("glorbix", [ExampleRow(q, a, i + 1) for i, (q, a) in enumerate(FACTS)], "Answer the question.", test_size=0.2)
    app = TrainApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(TrainScreen(settings, conn, base_pair.hf_dir))  # the session's base: no dequantisation per test
        screen = app.screen
        assert screen.query_one("#train-bank", Select).value == "glorbix"
        assert screen.query_one("#train-name", Input).value == "glorbix-lora"
        screen.query_one("#train-max_steps", Input).value = str(STEPS)
        screen.query_one("#train-learning_rate", Input).value = "0.001"
        screen.query_one("#train-lora_r", Input).value = "4"
        await pilot.press("ctrl+t")
        plot = screen.query_one("#train-plot", LossPlot)
        await wait_for(pilot, lambda: len(screen.losses) >= 1)
        live = status(screen)
        await pilot.press("escape")  # stop: the trainer saves a checkpoint after this step
        bar = screen.query_one("#train-progress", ProgressBar)
        assert bar.total == STEPS and bar.progress >= 1
        assert "/5 · loss" in live and "tok/s" in live and "ETA" in live
        assert screen.steps[0] == 1 and "glorbix-lora: loss" in str(plot.render())
        await wait_for(pilot, lambda: screen.cancel is None)
        run = RunStore(conn).get("glorbix-lora")
        assert run.status == "cancelled" and 1 <= run.step < STEPS and run.args["lora_r"] == 4 and run.args["learning_rate"] == 0.001
        assert "ctrl+r to resume" in status(screen)
        table = screen.query_one("#train-runs", RunTable)
        assert table.selected_run == "glorbix-lora" and "cancelled (resumable)" in str(table.get_row("glorbix-lora"))

        stopped_at = run.step
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.cancel is None and "ready" in status(screen))
        run = RunStore(conn).get("glorbix-lora")
        assert run.status == "done" and run.step == STEPS
        assert [h["step"] for h in run.loss_history] == list(range(1, STEPS + 1))
        assert screen.steps == list(range(1, STEPS + 1)) and len(screen.losses) == STEPS  # the plot kept the first part
        assert screen.query_one("#train-progress", ProgressBar).progress == STEPS
        assert adapter_gguf(conn, "glorbix-lora").is_file()
        assert "glorbix-lora" in str(table.get_row("glorbix-lora")) and "done" in str(table.get_row("glorbix-lora"))
        assert stopped_at < STEPS
        await pilot.press("escape")  # idle: back to the previous screen
        assert not isinstance(app.screen, TrainScreen)


async def test_no_bank_and_bad_settings_are_reported_without_starting(settings, conn) -> None:
    app = TrainApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        assert "no example bank yet" in status(screen)
        await pilot.press("ctrl+t")
        assert screen.cancel is None and RunStore(conn).list() == []
        BankStore(conn).create("tiny", [ExampleRow(q, a, i + 1) for i, (q, a) in enumerate(FACTS)], test_size=0.2)
        screen.query_one("#train-bank", Select).set_options([("tiny", "tiny")])
        screen.query_one("#train-bank", Select).value = "tiny"
        await pilot.pause()
        screen.query_one("#train-lora_r", Input).value = "0"
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert screen.cancel is None and RunStore(conn).list() == []
        messages = [n.message for n in app._notifications]
        assert any("no example bank" in m for m in messages) and any("r must be >= 1" in m for m in messages)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert any("select a cancelled, failed or interrupted run" in n.message for n in app._notifications)


async def test_kind_picks_the_form_and_the_run_it_starts(settings, conn, tmp_path) -> None:
    BankStore(conn).create("glorbix", [ExampleRow(q, a, i + 1) for i, (q, a) in enumerate(FACTS)], "Answer the question.", test_size=0.2)
    app = TrainApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        screen = app.screen
        bank, path = screen.query_one("#train-bank", Select), screen.query_one("#train-corpus", Input)
        assert screen.kind == "sft" and bank.display and not path.display
        screen.query_one("#train-kind", Select).value = "grpo"
        await pilot.pause()
        assert bank.display and screen.query_one("#train-epochs", Input).disabled and "reward model" in status(screen)
        screen.query_one("#train-kind", Select).value = "pretrain"
        await pilot.pause()
        assert path.display and not bank.display and not screen.query_one("#train-epochs", Input).disabled
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert any("give the corpus" in n.message for n in app._notifications)
        path.value = str(tmp_path / "missing")
        await pilot.press("ctrl+t")  # the pre-training prepare runs: it refuses the path before loading any model
        await wait_for(pilot, lambda: screen.cancel is None and "no such file or directory" in status(screen))
        assert RunStore(conn).list() == []


async def test_report_to_choice_reaches_the_run_settings(settings, conn) -> None:
    app = TrainApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        screen = app.screen
        assert screen.form_args().report_to == "none"
        screen.query_one("#train-report-to", Select).value = "tensorboard"
        await pilot.pause()
        assert screen.form_args().report_to == "tensorboard"
        assert screen.query_one("#train-name", Input).value == ""  # only the bank choice names the adapter


async def test_a_killed_run_shows_as_interrupted_and_resumable(settings, conn) -> None:
    """What `kill -9` of `tunelab train` leaves (a running row, no process) must not read as running here."""
    import signal
    import subprocess

    from tunelab.stores import liveness

    store = RunStore(conn)
    ghost = store.create("ghost", Path("b.gguf"), "sha", Path("hf"), "glorbix", [1], {}, settings.home / "runs" / "ghost", "cpu")
    store.progress(ghost.id, 3, 8, [{"step": 3, "loss": 1.5, "lr": 0.0, "tokens_per_s": 0.0}])
    (settings.home / "runs" / "ghost" / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    child = subprocess.Popen(["sleep", "30"])
    conn.execute("UPDATE runs SET pid = ?, proc_start = ? WHERE id = ?", (child.pid, liveness.start_time(child.pid), ghost.id))
    child.send_signal(signal.SIGKILL)
    child.wait()
    app = TrainApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        table = app.screen.query_one("#train-runs", RunTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        row = [str(cell) for cell in table.get_row("ghost")]
        assert row[:5] == ["ghost", "sft", "glorbix", "interrupted (resumable)", "3/8 · saved 2"], row


def test_snapshot_train_screen_with_a_past_run(snap_compare, settings, conn, tmp_path) -> None:
    BankStore(conn).create("glorbix", [ExampleRow(q, a, i + 1) for i, (q, a) in enumerate(FACTS)], "Answer the question.", test_size=0.2)
    store = RunStore(conn)
    run = store.create(
        "glorbix-lora", tmp_path / "base.gguf", "0" * 64, tmp_path / "hf", "glorbix", [1, 2, 3], {"r": 8}, tmp_path / "run", "cpu"
    )
    losses = [2.4, 2.1, 1.7, 1.5, 1.2, 1.1]
    store.progress(run.id, len(losses), 10, [{"step": i + 1, "loss": x, "lr": 1e-3, "tokens_per_s": 100.0} for i, x in enumerate(losses)])
    store.set_status(run.id, "cancelled", "cancelled by the user", train_seconds=12.0, tokens_per_s=100.0)
    assert snap_compare(TrainApp(settings, conn), press=["f4"], terminal_size=SIZE)


async def test_distil_kind_relabels_a_bank_with_a_teacher_and_a_second_start_resumes(settings, conn, engine) -> None:
    from tunelab.runtime.runtime import Runtime

    rows = [ExampleRow(f"review {i}: {'great' if i % 2 else 'awful'} film", ("negative", "positive")[i % 2], i) for i in range(8)]
    BankStore(conn).create("mini", rows, "Answer positive or negative.", test_size=0.25)
    app = TrainApp(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(TrainScreen(settings, conn, runtime=Runtime(settings, conn, engine=engine)))
        screen = app.screen
        screen.query_one("#train-kind", Select).value = "distill"
        await pilot.pause()
        teacher = screen.query_one("#train-teacher", Input)
        assert teacher.display and screen.query_one("#train-max_steps", Input).disabled and "teacher" in status(screen)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert any("name the teacher" in n.message for n in app._notifications) and not BankStore(conn).exists("mini-lora")
        teacher.value = "base+jaccard@2"
        screen.query_one("#train-name", Input).value = "mini-icl"
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: screen.cancel is None and "is ready" in status(screen))
        distilled = BankStore(conn).get("mini-icl")
        assert (distilled.n_train, distilled.n_test) == (6, 0) and screen.query_one("#train-progress", ProgressBar).progress == 6
        await pilot.press("ctrl+t")  # the same form again: every answer is stored, nothing is asked twice
        await wait_for(pilot, lambda: screen.cancel is None and "is ready" in status(screen))
        assert BankStore(conn).get("mini-icl").n_train == 6
