"""Where a training run also sends its metrics: TensorBoard, Weights & Biases, MLflow or nowhere.

tunelab always keeps the loss history in its own database; `--report-to` additionally hands the
choice to the HF Trainer's `report_to` (the integrations LLaMA-Factory, axolotl and Unsloth use),
so runs show up next to the user's other experiments. TensorBoard's event files go to
`<run dir>/logs`; W&B and MLflow keep their own settings (`WANDB_*`, `MLFLOW_TRACKING_URI`).
The package is checked up front, so a missing one is a one-line error before anything is trained.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
LOG_DIR = "logs"
"""Folder of the run dir that receives TensorBoard event files."""


def report_to_problem(choice: str) -> str | None:
    """Why `choice` cannot be used (unknown, or its package is not installed), else None."""
    if choice not in REPORT_TO:
        return f"report_to must be one of {', '.join(REPORT_TO)} (got {choice!r})"
    if choice != "none" and importlib.util.find_spec(choice) is None:
        return f"report_to {choice} needs the {choice} package: pip install {choice}"
    return None


def log_dir(run_dir: Path) -> Path:
    return run_dir / LOG_DIR


def report_kwargs(choice: str, run_dir: Path) -> dict[str, Any]:
    """The TrainingArguments for `choice`; TensorBoard writes under `log_dir(run_dir)`."""
    if choice == "none":
        return {"report_to": []}
    if choice == "tensorboard":
        # transformers reads the directory from TENSORBOARD_LOGGING_DIR (`logging_dir` is deprecated)
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir(run_dir))
    return {"report_to": [choice]}
