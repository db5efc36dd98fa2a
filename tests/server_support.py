"""Real servers on loopback for tests and benchmarks: a free port, and `chroma run` started and stopped.

Plain functions without pytest, so `benchmarks/selection.py` starts the Chroma server exactly the
way the selector tests do (it puts this folder on its import path).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chroma_cli() -> Path | None:
    """The `chroma` command that ships with chromadb: on PATH, or next to this Python (an unactivated venv)."""
    found = shutil.which("chroma") or Path(sys.executable).parent / "chroma"
    return Path(found) if Path(found).exists() else None


@contextmanager
def chroma_run(path: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """A real `chroma run` storing under `path`, on a free loopback port; yields its URL and stops it after.

    Ready means the port accepts connections (the heartbeat route answers as soon as it does)."""
    chroma = chroma_cli()
    if chroma is None:
        raise FileNotFoundError("the chroma CLI is not installed (it ships with chromadb)")
    port = free_port()
    process = subprocess.Popen(
        [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"chroma run did not start within {timeout_s:.0f} s (exit code {process.poll()})")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
