"""The tunelab command as the scripted benchmarks run it: a user's process, its own data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def tunelab(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One CLI command as a user runs it; a failure stops the benchmark with its last lines."""
    result = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", *args], capture_output=True, text=True, env={**os.environ, "TUNELAB_HOME": str(home)}
    )
    if result.returncode != 0:
        raise SystemExit(f"tunelab {' '.join(args)} failed: {result.stderr.strip()[-800:]}")
    return result
