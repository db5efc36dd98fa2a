"""Real server processes on loopback for the tests: a free port, and llama-cpp-python's server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(process: subprocess.Popen[bytes], url: str, timeout_s: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the server's own output if it dies first."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"server exited with {process.returncode}: {output[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up within {timeout_s} s")


@contextmanager
def llama_cpp_server(
    models: list[dict[str, object]], config_dir: Path, n_threads: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m llama_cpp.server` (llama-cpp-python's [server] extra) on 127.0.0.1 with one
    entry per model (`model`, `model_alias`, optional `lora_path`); yields (URL, process)."""
    port = free_port()
    entries = [{"n_ctx": 2048, "n_threads": n_threads, "n_threads_batch": n_threads, "verbose": False, **m} for m in models]
    config = config_dir / f"llama-server-{port}.json"
    config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": entries}))
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": str(n_threads)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, f"{url}/v1/models")
        yield url, process
    finally:
        process.kill()
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()
