"""The Trainer side of training progress: a transformers `TrainerCallback` that emits `TrainProgress`.

`ProgressCallback` turns the Trainer's logs into `TrainProgress` events for a listener, and is
also how a run is cancelled - the listener's side sets `cancel`, and the callback asks the Trainer
to save a checkpoint and stop at the end of the current step (a resumable state, never a
half-written adapter). Under `accelerate launch` each process has its own callback; the Trainer
calls them at the same points, so they stop together. It lives apart from the event records
because importing transformers takes seconds and only training needs it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from transformers import TrainerCallback

from tunelab.faults import pause_point
from tunelab.finetune.distributed import any_process
from tunelab.finetune.progress import Listener, TrainProgress


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
