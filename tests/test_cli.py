"""The `tunelab` command as a user runs it: real processes, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import assert_clean_error, invoke

TUNELAB = [sys.executable, "-m", "tunelab.cli"]


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TUNELAB, *args], capture_output=True, text=True, input=input, timeout=180, env={**os.environ, **(env or {})})


def test_chat_json_record_and_continuation(home: Path):
    first = run("chat", "--json", "--temperature", "0", "--max-tokens", "12", "--system", "Answer briefly.", "Hi there")
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert record["text"] and record["stats"]["completion_tokens"] <= 12
    assert record["model_sha256"] and len(record["model_sha256"]) == 64
    assert record["params"]["temperature"] == 0.0
    second = run("chat", "--conversation", str(record["conversation_id"]), "--max-tokens", "8", "--seed", "3", "And?")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip()
    assert f"conversation {record['conversation_id']}" in second.stderr
    db = sqlite3.connect(home / "tunelab.db")
    roles = [r[0] for r in db.execute("SELECT role FROM messages WHERE conversation_id = ? ORDER BY id", (record["conversation_id"],))]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert db.execute("SELECT seed FROM messages ORDER BY id DESC LIMIT 1").fetchone()[0] == 3


def test_chat_seed_reproduces_a_sampled_reply(home: Path):
    """At temperature > 0 the seed decides the reply: the same seed gives the same text, another seed another."""

    def reply(seed: int) -> dict:
        result = invoke("chat", "--json", "--temperature", "1.0", "--max-tokens", "16", "--seed", str(seed), "Tell me about the sea.")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first, again, other = reply(7), reply(7), reply(8)
    assert first["text"] and first["text"] == again["text"] and first["params"]["seed"] == again["params"]["seed"] == 7
    assert other["text"] != first["text"]


def test_chat_reads_stdin(home: Path):
    result = run("chat", "--max-tokens", "4", "-", input="Say yes.")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_history_list_show_export(home: Path, tmp_path: Path):
    record = json.loads(run("chat", "--json", "--max-tokens", "6", "Tell me a fact").stdout)
    cid = str(record["conversation_id"])
    listing = run("history", "list")
    assert "Tell me a fact" in listing.stdout
    shown = run("history", "show", cid)
    assert "## user" in shown.stdout and "## assistant" in shown.stdout
    out = tmp_path / "conv.json"
    assert run("history", "export", cid, "--format", "json", "-o", str(out)).returncode == 0
    exported = json.loads(out.read_text())
    assert exported["messages"][1]["model_sha256"] == record["model_sha256"]
    assert run("history", "rename", cid, "Facts").returncode == 0
    assert "Facts" in run("history", "list").stdout
    assert run("history", "delete", cid).returncode == 0
    assert_clean_error(invoke("history", "show", cid), "no conversation with id")


def test_models_and_doctor(home: Path, bundled_model: Path, tmp_path: Path):
    listing = run("models")
    assert "smollm2-135m" in listing.stdout and "bundled" in listing.stdout
    assert run("models", "add", "mine", str(bundled_model)).returncode == 0
    assert "mine" in run("models", "list").stdout
    assert_clean_error(invoke("models", "add", "mine", str(bundled_model)), "already exists")
    doctor = run("doctor")
    assert doctor.returncode == 0, doctor.stderr
    for key in ("llama.cpp GPU offload", "torch CUDA", "data dir", "bundled chat model", "bundled embedding model"):
        assert key in doctor.stdout
    assert str(home) in doctor.stdout


def test_missing_model_path(home: Path):
    assert_clean_error(invoke("chat", "--model", "/no/such/model.gguf", "hi"), "model file not found")


def test_file_that_is_not_gguf(tmp_path: Path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("just some text, not a model")
    assert_clean_error(invoke("chat", "--model", str(fake), "hi"), "not a GGUF file")


def test_truncated_gguf(tmp_path: Path, bundled_model: Path):
    cut = tmp_path / "cut.gguf"
    with open(bundled_model, "rb") as src:
        cut.write_bytes(src.read(2_000_000))
    assert_clean_error(invoke("chat", "--model", str(cut), "hi"), "truncated or corrupt")


def test_unusable_data_dir(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke("history", "list", env={"TUNELAB_HOME": str(blocker / "sub")})
    assert_clean_error(result, "is not usable")


def test_empty_prompt(home: Path):
    assert_clean_error(invoke("chat", "   "), "empty prompt")
    assert (
        not (home / "tunelab.db").exists()
        or sqlite3.connect(home / "tunelab.db").execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    )


def test_prompt_longer_than_context(home: Path):
    result = run("chat", "--n-ctx", "256", "word " * 400)
    assert_clean_error(result, "prompt too long")
    assert sqlite3.connect(home / "tunelab.db").execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_bad_sampler_value(home: Path):
    assert_clean_error(invoke("chat", "--temperature", "-1", "hi"), "temperature must be >= 0")


def test_bad_parallel_value(home: Path):
    assert_clean_error(invoke("compare", "--bank", "any", "--parallel", "-1"), "parallel must be >= 0 (got -1)")


def test_ctrl_c_saves_partial_reply(home: Path):
    # A shell running the suite in the background (`ci &`) starts it with SIGINT ignored, which the
    # child would inherit: Python then installs no KeyboardInterrupt handler. Restore the default,
    # as an interactive terminal has it.
    proc = subprocess.Popen(
        [*TUNELAB, "chat", "--max-tokens", "400", "--temperature", "0", "Write a very long story about a lighthouse keeper."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    proc.stdout.read(20)  # the reply is streaming
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: partial reply saved" in err and "Traceback" not in err
    row = (
        sqlite3.connect(home / "tunelab.db")
        .execute("SELECT content, interrupted, finish_reason FROM messages WHERE role = 'assistant'")
        .fetchone()
    )
    assert row[0] and row[1] == 1 and row[2] == "cancelled"


@pytest.mark.parametrize("args", [["--help"], ["chat", "--help"], ["history", "--help"]])
def test_help_lists_commands(args: list[str]):
    result = invoke(*args)
    assert result.returncode == 0 and "Usage" in result.stdout


def test_cli_and_tui_start_without_the_training_libraries():
    """torch, transformers, peft and trl take seconds to import; a command that does not train must not pay that."""
    heavy = ("torch", "transformers", "peft", "trl", "sentence_transformers", "chromadb")
    code = f"import sys, tunelab.cli, tunelab.tui; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
