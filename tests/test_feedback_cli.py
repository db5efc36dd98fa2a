"""`tunelab rate` and `tunelab feedback` as a user runs them: real processes, real replies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_support import assert_clean_error, invoke

TUNELAB = [sys.executable, "-m", "tunelab.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TUNELAB, *args], capture_output=True, text=True, timeout=180, env=dict(os.environ))


def test_rate_a_real_reply_list_export_and_delete(home: Path, tmp_path: Path) -> None:
    chat = run("chat", "--json", "--temperature", "0", "--max-tokens", "8", "--system", "Answer briefly.", "Name a colour.")
    assert chat.returncode == 0, chat.stderr
    record = json.loads(chat.stdout)
    message_id = str(record["message_id"])

    assert run("rate", message_id, "up", "--reason", "correct").stdout.strip() == f"message {message_id}: up"
    assert run("rate", message_id, "down", "--comment", "meh").returncode == 0
    listed = json.loads(run("feedback", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["rating"] == "down" and listed[0]["comment"] == "meh"
    assert listed[0]["reply"] == record["text"]
    assert listed[0]["prompt"] == [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}]
    assert listed[0]["model_sha256"] == record["model_sha256"]
    assert "👎" in run("feedback", "list", "--counts").stdout

    out = tmp_path / "kto.jsonl"
    exported = run("feedback", "export", "--format", "kto", "-o", str(out))
    assert exported.returncode == 0 and "wrote 1 row(s)" in exported.stderr
    row = json.loads(out.read_text())
    assert row["label"] is False and row["completion"] == [{"role": "assistant", "content": record["text"]}]
    assert json.loads(run("feedback", "export", "--format", "kto").stdout) == row

    history = run("history", "delete", str(record["conversation_id"]))
    assert history.returncode == 0
    assert json.loads(run("feedback", "list", "--json").stdout)[0]["reply"] == record["text"]  # the snapshot survives

    assert run("rate", message_id, "none").stdout.strip() == f"message {message_id}: rating removed"
    assert json.loads(run("feedback", "list", "--json").stdout) == []


def test_feedback_bad_input_is_one_line(home: Path, tmp_path: Path) -> None:
    assert_clean_error(invoke("rate", "12345", "up"), "no message with id 12345")
    assert_clean_error(invoke("feedback", "export", "--format", "dpo", "-o", str(tmp_path / "x.jsonl")), "nothing to export")
    assert_clean_error(invoke("feedback", "delete", "7"), "no rating with id 7")
    bad = invoke("rate", "1", "sideways")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
