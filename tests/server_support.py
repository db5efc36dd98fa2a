"""Real servers on loopback for tests and benchmarks: a free port, `chroma run`, and
llama-cpp-python's OpenAI-compatible server, each started and stopped.

Plain functions without pytest, so `benchmarks/selection.py` starts the Chroma server exactly the
way the selector tests do (it puts this folder on its import path).
"""

from __future__ import annotations

import json
import os
import shutil
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
    models: list[dict[str, object]], config_dir: Path, n_threads: int = 1, interrupt_requests: bool = True
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m llama_cpp.server` (llama-cpp-python's [server] extra) on 127.0.0.1 with one
    entry per model (`model`, `model_alias`, optional `lora_path`); yields (URL, process).
    `interrupt_requests` (its default): a new request cuts off the reply being streamed."""
    port = free_port()
    entries = [{"n_ctx": 2048, "n_threads": n_threads, "n_threads_batch": n_threads, "verbose": False, **m} for m in models]
    config = config_dir / f"llama-server-{port}.json"
    config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "interrupt_requests": interrupt_requests, "models": entries}))
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


@contextmanager
def llama_server_process(
    binary: Path, model: Path, loras: list[Path], slots: int, cache_ram: bool = True, n_ctx: int = 2048, n_threads: int = 1
) -> Iterator[str]:
    """llama.cpp's own `llama-server` on 127.0.0.1 serving `model` with `loras` loaded but not
    applied (each request names its scales) and `slots` slots of `n_ctx` tokens each; yields the
    URL. `cache_ram=False` turns its RAM prompt cache off (`--cache-ram 0`)."""
    port = free_port()
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots)]
    # -fa off: llama-cpp-python's default; the server's "auto" turns flash attention on, whose
    # other summation order moves a greedy answer off the in-process one after a few tokens
    command += ["-c", str(n_ctx * slots), "-t", str(n_threads), "-tb", str(n_threads), "-fa", "off", "--no-webui"]
    command += [] if cache_ram else ["--cache-ram", "0"]
    if loras:
        command += ["--lora", ",".join(str(path) for path in loras), "--lora-init-without-apply"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, f"{url}/health")
        yield url
    finally:
        process.kill()
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()
