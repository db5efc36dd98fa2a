"""The real CLI under `accelerate launch --num_processes 2` on the CPU (gloo): one run, one adapter, progress once, resume.

Each launch starts the launcher and two training processes (torch loads three times), so the runs
are a few steps of batch 1 or 2 on short rows. A run is killed (the launcher and its processes)
once the main process has written a checkpoint, then resumed under the launcher: the checks of
a single-process run (tests/test_faults.py), with two processes writing nothing twice.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fault_support import checked_db, count, kill_at, ok, run
from finetune_support import base_pair  # noqa: F401

from tunelab.finetune.distributed import DEEPSPEED_PACKAGE
from tunelab.stores.model_files import check_gguf_complete

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Two training processes on a 2-core machine: one thread each (more spin against each other)."""


def launch(*args: str) -> list[str]:
    """`accelerate launch` of `tunelab ARGS` as two processes, on a free port (tests may run side by side).

    `--multi_gpu` is what starts several processes (torch.distributed.run); on a machine without a
    GPU they train on the CPU over gloo, as tunelab trains there anyway. (accelerate's `--cpu`
    with several processes means MPI with `--mpirun_hostfile`; without one it starts a single process.)"""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flags = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, "--main_process_port", str(port), "-m", "tunelab.cli", *args]


def launched(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(launch(*args), capture_output=True, text=True, timeout=timeout, env={**os.environ, **ONE_THREAD})


def progress_lines(stderr: str, step: int, total: int) -> int:
    """How many times the progress line of `step` was printed (each process would print its own)."""
    return stderr.count(f"] {step}/{total} · ")


@pytest.mark.heavy
@pytest.mark.slow
def test_sft_under_two_processes_records_one_run_and_resumes_after_a_kill(home: Path, base_pair) -> None:
    ok("bank", "import-demo", "sentiment", "--size", "12", "--name", "sent")
    args = ["--hf-dir", str(base_pair.hf_dir), "--max-steps", "4", "--save-steps", "2", "--batch-size", "1", "--max-length", "48"]
    args += ["--lora-r", "4"]
    first = kill_at("train.checkpoint_saved", command=launch("train", "dist", "--bank", "sent", *args), env=ONE_THREAD)
    assert first.count("training 'dist' on") == 1 and "cpu × 2 processes" in first
    assert progress_lines(first, 1, 4) == 1 and progress_lines(first, 2, 4) == 1
    conn = checked_db(home)
    assert count(conn, "runs") == 1 and count(conn, "adapters") == 0
    conn.close()
    assert (home / "runs" / "dist" / "checkpoints" / "checkpoint-2").is_dir()

    resumed = launched("train", "--resume", "dist")
    assert resumed.returncode == 0, resumed.stderr[:6000]
    assert resumed.stderr.count("resuming run 'dist' from checkpoint-2") == 1
    assert progress_lines(resumed.stderr, 3, 4) == 1 and progress_lines(resumed.stderr, 4, 4) == 1
    assert resumed.stdout.count("adapter 'dist'") == 1
    conn = checked_db(home)
    (row,) = conn.execute("SELECT status, step, loss_history_json FROM runs").fetchall()
    assert row["status"] == "done" and row["step"] == 4
    assert [h["step"] for h in json.loads(row["loss_history_json"])] == [1, 2, 3, 4]  # each step recorded once
    assert count(conn, "adapters", "name = 'dist'") == 1
    conn.close()
    check_gguf_complete(home / "adapters" / "dist" / "adapter.gguf")
    assert not (home / "runs" / "dist" / "checkpoints").exists()
    assert "dist" in ok("adapters").stdout


@pytest.mark.heavy
@pytest.mark.slow
def test_dpo_under_two_processes_records_one_run_and_resumes_after_a_kill(home: Path, conn, base_pair) -> None:
    from feedback_support import rate_helpful_vs_rude

    rate_helpful_vs_rude(conn, 8)
    args = ["--hf-dir", str(base_pair.hf_dir), "--model", str(base_pair.gguf_path), "--max-steps", "4", "--save-steps", "2"]
    args += ["--batch-size", "2", "--max-length", "48", "--lora-r", "4"]
    first = kill_at(
        "train.checkpoint_saved", command=launch("feedback", "train", "--method", "dpo", "--name", "pref", *args), env=ONE_THREAD
    )
    assert first.count("training dpo 'pref' on 8 pairs") == 1 and progress_lines(first, 2, 4) == 1

    resumed = launched("feedback", "train", "--resume", "pref")
    assert resumed.returncode == 0, resumed.stderr[:6000]
    assert progress_lines(resumed.stderr, 4, 4) == 1 and resumed.stdout.count("dpo 'pref': loss") == 1
    db = checked_db(home)
    assert tuple(db.execute("SELECT status, step FROM runs").fetchone()) == ("done", 4) and count(db, "runs") == 1
    assert [h["step"] for h in json.loads(db.execute("SELECT loss_history_json FROM runs").fetchone()[0])] == [1, 2, 3, 4]
    assert count(db, "adapters", "name = 'pref'") == 1
    db.close()
    check_gguf_complete(home / "adapters" / "pref" / "adapter.gguf")


@pytest.mark.slow
def test_a_refused_launch_says_why_once_and_no_process_waits(home: Path) -> None:
    refused = launched("train", "dist", "--bank", "nosuch", "--max-steps", "2", timeout=300)
    assert refused.returncode != 0
    # tunelab's one line comes first, once (the other process exits quietly); the launcher then adds its own report
    assert refused.stderr.startswith("error: unknown bank 'nosuch'") and refused.stderr.count("error: unknown bank") == 1


def test_a_deepspeed_config_is_checked_before_anything_loads(home: Path, tmp_path: Path) -> None:
    """deepspeed is not installed here: the shipped ZeRO-2 config is read, then refused in one line."""
    from importlib.util import find_spec

    from tunelab.finetune.distributed import deepspeed_config, deepspeed_kwargs

    shipped = Path(__file__).parent.parent / "docs" / "deepspeed_zero2.json"
    assert json.loads(shipped.read_text())["zero_optimization"]["stage"] == 2
    missing = run("train", "ds", "--bank", "sent", "--deepspeed", str(tmp_path / "nope.json"))  # settings are read before the bank
    assert missing.returncode == 1 and "deepspeed config" in missing.stderr and "not found" in missing.stderr
    (tmp_path / "bad.json").write_text("{zero")
    broken = run("feedback", "train", "--method", "kto", "--deepspeed", str(tmp_path / "bad.json"))
    assert broken.returncode == 1 and "is not JSON" in broken.stderr
    for result in (missing, broken):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    if find_spec(DEEPSPEED_PACKAGE) is None:
        refused = run("train", "ds", "--bank", "sent", "--deepspeed", str(shipped))
        assert refused.returncode == 1 and "pip install deepspeed" in refused.stderr and "Traceback" not in refused.stderr
    # the file reaches TrainingArguments(deepspeed=...) as an absolute path, so --resume from elsewhere finds it
    assert deepspeed_kwargs(deepspeed_config(os.path.relpath(shipped))) == {"deepspeed": str(shipped.resolve())}
    assert deepspeed_kwargs("") == {}
