"""Named points where the fault-injection tests stop a real process (`TUNELAB_FAULT_PAUSE=<point>`).

A kill at a random moment is not repeatable; a kill at a named point is. When the variable names
the point being passed, the process prints `TUNELAB_FAULT_PAUSED <point>` on stderr and blocks
there until the test SIGKILLs it. Unset (every real use), a call is one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "TUNELAB_FAULT_PAUSE"
MARKER = "TUNELAB_FAULT_PAUSED"


def pause_point(name: str) -> None:
    """Block forever here if the tests asked to kill the process at `name`."""
    if os.environ.get(ENV) != name:
        return
    sys.stderr.write(f"\n{MARKER} {name}\n")
    sys.stderr.flush()
    while True:
        time.sleep(60)
