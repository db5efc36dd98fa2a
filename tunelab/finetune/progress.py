"""Training progress as plain events, so the CLI's progress bar and the TUI's loss plot read the same thing.

`ProgressCallback` is a transformers `TrainerCallback`: it turns the Trainer's logs into
`TrainProgress` events for a listener, and is also how a run is cancelled - the listener's side
sets `cancel`, and the callback asks the Trainer to save a checkpoint and stop at the end of the
current step (a resumable state, never a half-written adapter). Under `accelerate launch` each
process has its own callback; the Trainer calls them at the same points, so they stop together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

from tunelab.faults import pause_point
from tunelab.finetune.distributed import any_process


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total: int
    loss: float | None
    lr: float | None
    tokens_per_s: float | None
    """Non-padding tokens trained per second since the previous event."""
    eta_s: float | None
    """Seconds left at the speed of the steps so far in this session."""

    def describe(self) -> str:
        """The event as one line of text (the CLI progress line and the TUI status read the same)."""
        loss = f"loss {self.loss:.4f}" if self.loss is not None else "loss -"
        tps = f"{self.tokens_per_s:.0f} tok/s" if self.tokens_per_s else "- tok/s"
        eta = f"ETA {self.eta_s:.0f}s" if self.eta_s is not None else "ETA -"
        return f"{self.step}/{self.total} · {loss} · lr {self.lr or 0:.2e} · {tps} · {eta}"


Listener = Callable[[TrainProgress], None]


class ProgressCallback(TrainerCallback):
    """Emit a `TrainProgress` per logged step; stop with a checkpoint once `cancel` is set."""

    def __init__(self, listener: Listener | None = None, cancel: threading.Event | None = None) -> None:
        self.listener = listener
        self.cancel = cancel or threading.Event()
        self.cancelled = False
        self._start_step = 0
        self._start_time = 0.0
        self._last = (0.0, 0.0)  # (time, tokens) at the previous log

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start_step = state.global_step
        self._start_time = time.perf_counter()
        self._last = (self._start_time, float(state.num_input_tokens_seen or 0))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self._stop_if_cancelled(control)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:  # the process that wrote the checkpoint's weights and state
            pause_point("train.checkpoint_saved")

    def _stop_if_cancelled(self, control: Any) -> Any:
        """Save and stop at this step; checked after the step and after its log (a listener may cancel there).

        Under `accelerate launch` every process stops when any was cancelled (only the main one has a listener)."""
        if any_process(self.cancel.is_set()):
            self.cancelled = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        now = time.perf_counter()
        tokens = float(logs.get("num_tokens", state.num_input_tokens_seen or 0))
        last_time, last_tokens = self._last
        self._last = (now, tokens)
        tps = (tokens - last_tokens) / (now - last_time) if tokens > last_tokens and now > last_time else None
        done = state.global_step - self._start_step
        eta = (now - self._start_time) / done * (state.max_steps - state.global_step) if done > 0 else None
        event = TrainProgress(state.global_step, state.max_steps, logs.get("loss"), logs.get("learning_rate"), tps, eta)
        if self.listener is not None:
            self.listener(event)
        self._stop_if_cancelled(control)


MEASURED = (
    ("held_out_ppl", "held-out perplexity", ".2f"),
    ("mean_reward", "mean reward of sampled replies", ".3f"),
    ("logp_preferred", "mean log p of the preferred replies", ".2f"),
)
"""Before/after measures a finished run's metrics may carry (pre-training, RL, KTO/DPO), as shown."""


def measured_change(metrics: dict[str, Any]) -> str | None:
    """What the run measured before and after training, in one phrase (CLI and Train screen alike)."""
    for key, label, fmt in MEASURED:
        if f"{key}_before" in metrics:
            return f"{label} {metrics[f'{key}_before']:{fmt}} -> {metrics[f'{key}_after']:{fmt}}"
    return None
