"""An unexpected error inside a screen's worker thread: one line in a notification, the traceback
appended to the data dir's `tui-errors.log`, and the app kept running.

Textual's default for a failed worker is to exit the app with a traceback - a user mid-chat
would lose the screen over one bad reply. Workers that talk to llama.cpp, trl or a store are
declared with `exit_on_error=False`; their screen's `on_worker_state_changed` calls
`report_failed_worker`. Expected refusals (`TunelabError`) are still handled inside the worker,
where the message is written for the user.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from pathlib import Path

from textual.widget import Widget
from textual.worker import Worker, WorkerState

from tunelab.text import one_line


def report_failed_worker(node: Widget, event: Worker.StateChanged, log: Path) -> str | None:
    """Notify and log when `event` says a worker failed; returns the line shown (None otherwise)."""
    if event.state != WorkerState.ERROR or event.worker.error is None:
        return None
    error = event.worker.error
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as out:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"--- {stamp} worker {event.worker.group!r}\n")
            out.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        where = f" (details in {log})"
    except OSError:
        where = ""
    line = f"{event.worker.group} failed: {one_line(f'{type(error).__name__}: {error}', 160)}{where}"
    node.notify(line, severity="error", timeout=10)
    return line
