"""What every recorded training run (SFT, KTO, DPO, reward) does around its trainer: each
progress event goes into the run row's loss history, and an error leaves the run `failed` (or
`cancelled` for a second Ctrl-C) with the reason, so `adapters runs` never shows a dead run as running.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tunelab.errors import TunelabError
from tunelab.faults import pause_point
from tunelab.finetune.progress import Listener, TrainProgress
from tunelab.stores.runs import Run, RunStore


class Recorder:
    """A progress listener that stores the loss history in the run row, then passes the event on."""

    def __init__(self, store: RunStore, run: Run, resumed: bool, listener: Listener | None = None) -> None:
        self.store = store
        self.run = run
        self.listener = listener
        self.history: list[dict[str, float]] = list(run.loss_history) if resumed else []
        """A resumed run continues the history of the steps it already trained."""

    def __call__(self, event: TrainProgress) -> None:
        self.history.append(
            {"step": event.step, "loss": event.loss or 0.0, "lr": event.lr or 0.0, "tokens_per_s": event.tokens_per_s or 0.0}
        )
        self.store.progress(self.run.id, event.step, event.total, self.history)
        pause_point("train.step_recorded")
        if self.listener is not None:
            self.listener(event)


def oom_message(args: Any) -> str:
    """The out-of-GPU-memory hint for any run's arguments (SFTArgs, PreferenceArgs): the flags that
    lower memory, with their values now; the accumulation and checkpointing tips only where the
    method has those flags."""
    accumulate = ", raise --grad-accum to keep the effective batch" if hasattr(args, "grad_accum") else ""
    tips = [f"--batch-size (now {args.batch_size}{accumulate})", f"--max-length (now {args.max_length})"]
    if getattr(args, "gradient_checkpointing", True) is False:
        tips.append("or add --gradient-checkpointing")
    return "out of GPU memory: lower " + ", ".join(tips)


@contextmanager
def status_on_error(store: RunStore, run_id: int, oom_message: str) -> Iterator[None]:
    """Record why training stopped: out of GPU memory (a one-line hint), interrupted, or failed."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        store.set_status(run_id, "failed", oom_message)
        raise TunelabError(oom_message) from None
    except pickle.UnpicklingError as exc:  # torch's weights_only loader refused an object in a checkpoint
        message = (
            f"a checkpoint file holds pickled objects that are not plain weights, so it was not loaded "
            f"({str(exc).split('.')[0][:80]}): restart the run from step 0 with --restart"
        )
        store.set_status(run_id, "failed", message)
        raise TunelabError(message) from None
    except BaseException as exc:
        status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        store.set_status(run_id, status, f"{type(exc).__name__}: {exc}"[:500])
        raise
