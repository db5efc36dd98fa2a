"""`--report-to`: SFT and feedback runs write TensorBoard event files (read back with TensorBoard's
own reader) holding the loss tunelab recorded; a backend whose package is missing is a one-line error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner
from feedback_support import rate_sentiment
from finetune_support import base_pair  # noqa: F401

from tunelab.cli import cli
from tunelab.errors import TunelabError
from tunelab.finetune import feedback_runs
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.methods import sft
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.finetune.report_to import log_dir
from tunelab.stores.runs import Run

ROWS = [
    {"prompt": sft.prompt_messages("Answer.", f"What is {i} plus {i}?"), "completion": [{"role": "assistant", "content": str(2 * i)}]}
    for i in range(4)
]


def logged_losses(run: Run) -> list[tuple[int, float]]:
    """(step, value) of the `train/loss` scalar in the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(log_dir(Path(run.run_dir)).rglob("events.out.tfevents.*"))
    assert files, f"no event files under {log_dir(Path(run.run_dir))}"
    accumulator = EventAccumulator(str(files[0].parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"], accumulator.Tags()
    return [(e.step, e.value) for e in accumulator.Scalars("train/loss")]


@pytest.mark.slow
def test_sft_run_logs_its_loss_to_tensorboard(settings, conn, base_pair) -> None:
    args = SFTArgs(max_steps=3, batch_size=2, max_length=64, save_steps=100, report_to="tensorboard")
    plan = sft.plan_for(settings, conn, "tb-sft", "sums", list(range(4)), ROWS, args, hf_dir=base_pair.hf_dir)
    result = sft.train(plan)
    assert result.run.status == "done" and result.run.args["report_to"] == "tensorboard"
    logged = logged_losses(result.run)
    assert [step for step, _ in logged] == [1, 2, 3]
    assert [value for _, value in logged] == pytest.approx([h["loss"] for h in result.run.loss_history], rel=1e-5)


@pytest.mark.slow
def test_feedback_run_logs_its_loss_to_tensorboard(settings, conn, base_pair) -> None:
    rate_sentiment(conn, 4)  # 8 ratings: the fewest KTO trains on
    args = PreferenceArgs(max_steps=2, batch_size=2, max_length=96, save_steps=100, report_to="tensorboard")
    plan = feedback_runs.prepare(settings, conn, "kto", args, name="tb-kto", model=str(base_pair.gguf_path), hf_dir=base_pair.hf_dir)
    done = feedback_runs.train(plan)
    assert done.run.status == "done"
    logged = logged_losses(done.run)
    assert [value for _, value in logged] == pytest.approx([h["loss"] for h in done.run.loss_history], rel=1e-5)


def test_default_is_none_and_unknown_backends_are_refused() -> None:
    assert SFTArgs().report_to == "none" and PreferenceArgs().report_to == "none"
    with pytest.raises(TunelabError, match="report_to must be one of none, tensorboard, wandb, mlflow"):
        SFTArgs(report_to="comet")
    result = CliRunner().invoke(cli, ["train", "x", "--bank", "b", "--report-to", "comet"])
    assert result.exit_code == 2 and "tensorboard" in result.output  # click lists the choices


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
@pytest.mark.parametrize("command", [["train", "x", "--bank", "b"], ["feedback", "train", "--method", "kto"]])
def test_a_backend_that_is_not_installed_is_a_one_line_error(backend: str, command: list[str]) -> None:
    if importlib.util.find_spec(backend) is not None:
        pytest.skip(f"{backend} is installed here: nothing to refuse")
    result = CliRunner().invoke(cli, [*command, "--report-to", backend])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: bad training settings: report_to {backend} needs the {backend} package: pip install {backend}"
