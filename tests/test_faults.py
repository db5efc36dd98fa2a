"""Fault injection: the real CLI SIGKILLed at named points, then the data checked and the next command run.

Each case kills a `tunelab` process where a half-done write would hurt (inside the bank import
transaction, between Chroma batches, before and after the first checkpoint, while a GGUF is being
written, between compare answers, inside a rating, during a deletion) and asserts: the database
passes `PRAGMA integrity_check`, the counts are what a complete-or-absent write leaves, and the
next ordinary command works without repair. docs/reliability.md tabulates these cases.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fault_support import checked_db, count, kill_at, ok, run
from finetune_support import base_pair  # noqa: F401

BIG_ROWS = 50_000


def write_rows(path: Path, n: int, prefix: str = "q") -> Path:
    path.write_text(
        "".join(json.dumps({"input": f"{prefix} {i} {'word ' * (i % 7)}", "output": f"answer {i % 5}"}) + "\n" for i in range(n)),
        encoding="utf-8",
    )
    return path


def test_kill_inside_a_50k_row_bank_import_leaves_no_bank(home: Path, tmp_path: Path) -> None:
    ok("bank", "import", "small", str(write_rows(tmp_path / "small.jsonl", 40, "s")))
    big = write_rows(tmp_path / "big.jsonl", BIG_ROWS)
    kill_at("bank.import_inserted", "bank", "import", "big", str(big))
    conn = checked_db(home)
    assert count(conn, "banks", "name = 'big'") == 0 and count(conn, "examples") == 40  # absent, the other bank intact
    conn.close()
    assert "bank 'big': added 50000 example(s)" in ok("bank", "import", "big", str(big)).stdout  # no repair needed
    conn = checked_db(home)
    assert count(conn, "examples") == BIG_ROWS + 40


def chroma_ids(home: Path, bank_name: str) -> list[str]:
    from tunelab.config import Settings
    from tunelab.icl.embeddings import embedding_model_path
    from tunelab.stores.banks import BankStore
    from tunelab.stores.chroma_index import BankIndex
    from tunelab.stores.db import connect

    settings = Settings.load()
    conn = connect(settings.db_path)
    try:
        index = BankIndex(settings, BankStore(conn).get(bank_name), embedding_model_path(settings), None)  # type: ignore[arg-type]
        return list(index.collection.get(include=[])["ids"])
    finally:
        conn.close()


def train_ids(home: Path, bank_name: str) -> set[str]:
    conn = checked_db(home)
    try:
        return {
            str(r[0])
            for r in conn.execute(
                "SELECT e.id FROM examples e JOIN banks b ON b.id = e.bank_id WHERE b.name = ? AND e.split = 'train'", (bank_name,)
            )
        }
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_between_chroma_batches_then_rerun_embeds_only_the_missing(home: Path, tmp_path: Path) -> None:
    from tunelab.stores.chroma_index import ADD_BATCH

    ok("bank", "import", "emb", str(write_rows(tmp_path / "emb.jsonl", 400)), "--test-size", "0.1")
    wanted = train_ids(home, "emb")
    assert len(wanted) > ADD_BATCH
    kill_at("chroma.batch_added", "bank", "index", "emb")
    assert len(chroma_ids(home, "emb")) == ADD_BATCH  # the first batch is in, nothing else
    rerun = ok("bank", "index", "emb")
    assert f"{len(wanted) - ADD_BATCH} example(s) embedded, {len(wanted)} in the index" in rerun.stdout
    ids = chroma_ids(home, "emb")
    assert len(ids) == len(set(ids)) == len(wanted) and set(ids) == wanted  # no duplicates, equal to SQLite's


def reply_id(home: Path) -> int:
    record = json.loads(ok("chat", "--json", "--max-tokens", "4", "--temperature", "0", "Say hi").stdout)
    return int(record["message_id"])


def test_kill_inside_a_rating_and_a_vote_stores_neither(home: Path) -> None:
    message = reply_id(home)
    kill_at("feedback.rating_written", "rate", str(message), "up")
    conn = checked_db(home)
    assert count(conn, "ratings") == 0
    conn.close()
    assert "up" in ok("rate", str(message), "up").stdout
    # votes come from the TUI's arena: the same store call in a process of its own
    vote = (
        "from tunelab.config import Settings; from tunelab.stores.db import connect;"
        "from tunelab.stores.feedback import FeedbackStore, PreferenceVote;"
        "c = connect(Settings.load().db_path);"
        "FeedbackStore(c).vote(PreferenceVote(prompt=[{'role': 'user', 'content': 'hi'}], a_reply='a', b_reply='b', choice='a'))"
    )
    kill_at("feedback.vote_written", command=[sys.executable, "-c", vote])
    conn = checked_db(home)
    assert count(conn, "preference_votes") == 0 and count(conn, "ratings", "rating = 'up'") == 1
    conn.close()
    ok_vote = subprocess.run([sys.executable, "-c", vote], capture_output=True, text=True, timeout=120)
    assert ok_vote.returncode == 0, ok_vote.stderr
    conn = checked_db(home)
    assert count(conn, "preference_votes") == 1 and count(conn, "messages") == 2 and count(conn, "conversations") == 1


def train_args(base_pair, name: str = "kill-me") -> list[str]:  # type: ignore[no-untyped-def]
    """A 4-step run with a checkpoint every 2 steps: seconds per step on the CPU."""
    return [
        "train",
        name,
        "--bank",
        "sent",
        "--hf-dir",
        str(base_pair.hf_dir),
        "--max-steps",
        "4",
        "--save-steps",
        "2",
        "--batch-size",
        "1",
        "--max-length",
        "64",
        "--r",
        "4",
    ]


def runs_line(name: str) -> str:
    (line,) = [ln for ln in ok("adapters", "runs").stdout.splitlines() if f" {name} " in ln]
    return line


@pytest.mark.slow
def test_kill_before_the_first_checkpoint_then_restart_under_the_same_name(home: Path, base_pair) -> None:
    ok("bank", "import-demo", "sentiment", "--size", "20", "--name", "sent")
    kill_at("train.step_recorded", *train_args(base_pair))
    conn = checked_db(home)
    assert count(conn, "runs", "status = 'running'") == 1 and count(conn, "adapters") == 0
    conn.close()
    line = runs_line("kill-me")
    assert "interrupted" in line and "step 1/4" in line and "last checkpoint - (none" in line
    refused = run("train", "--resume", "kill-me")
    assert refused.returncode == 1 and "before its first checkpoint" in refused.stderr and "--restart kill-me" in refused.stderr
    assert "Traceback" not in refused.stderr
    taken = run(*train_args(base_pair))
    assert taken.returncode == 1 and "--restart kill-me" in taken.stderr
    restarted = ok("train", "--restart", "kill-me")
    assert "restarting run 'kill-me' from step 0" in restarted.stderr and "adapter 'kill-me'" in restarted.stdout
    conn = checked_db(home)
    (row,) = conn.execute("SELECT status, step, loss_history_json FROM runs").fetchall()
    assert row["status"] == "done" and row["step"] == 4
    assert [h["step"] for h in json.loads(row["loss_history_json"])] == [1, 2, 3, 4]  # the killed step 1 is not doubled
    assert count(conn, "adapters", "name = 'kill-me'") == 1


def evil_pickle(path: Path, marker: Path) -> None:
    """A file torch.load would run code from if it unpickled arbitrary objects."""
    import pickle

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    path.write_bytes(pickle.dumps({"state": Evil()}))


@pytest.mark.slow
def test_kill_after_the_first_checkpoint_resumes_from_it_and_refuses_a_pickled_checkpoint(home: Path, base_pair, tmp_path: Path) -> None:
    ok("bank", "import-demo", "sentiment", "--size", "20", "--name", "sent")
    kill_at("train.checkpoint_saved", *train_args(base_pair))
    checked_db(home).close()
    line = runs_line("kill-me")
    assert "interrupted" in line and "step 2/4" in line and "last checkpoint checkpoint-2" in line
    checkpoint = home / "runs" / "kill-me" / "checkpoints" / "checkpoint-2"
    # an untrusted checkpoint: the trainer's state files are torch pickles, loaded weights-only
    marker = tmp_path / "pickle-ran"
    (tmp_path / "saved").mkdir()
    for name in ("optimizer.pt", "rng_state.pth", "scheduler.pt"):
        if (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, tmp_path / "saved" / name)
            evil_pickle(checkpoint / name, marker)
    refused = run("train", "--resume", "kill-me")
    assert refused.returncode == 1 and "pickled objects" in refused.stderr and "Traceback" not in refused.stderr
    assert not marker.exists()
    for saved in (tmp_path / "saved").iterdir():
        shutil.copy2(saved, checkpoint / saved.name)
    resumed = ok("train", "--resume", "kill-me")
    assert "resuming run 'kill-me' from checkpoint-2" in resumed.stderr
    conn = checked_db(home)
    (row,) = conn.execute("SELECT status, step, loss_history_json FROM runs").fetchall()
    assert row["status"] == "done" and [h["step"] for h in json.loads(row["loss_history_json"])] == [1, 2, 3, 4]
    assert count(conn, "adapters") == 1


@pytest.mark.slow
def test_kill_while_the_adapter_gguf_is_written_registers_nothing_then_resume_and_delete(home: Path, base_pair) -> None:
    from tunelab.stores.model_files import check_gguf_complete

    ok("bank", "import-demo", "sentiment", "--size", "20", "--name", "sent")
    kill_at("export.gguf_written", *train_args(base_pair))
    conn = checked_db(home)
    assert count(conn, "adapters") == 0
    conn.close()
    assert not (home / "adapters" / "kill-me").exists()  # only a hidden temp folder, never under the adapter's name
    assert not list((home / "adapters").glob("*.gguf")) and not list((home / "adapters").glob("kill-me*"))
    assert list((home / "adapters").glob(".kill-me.*.tmp"))  # the killed writer's temp folder...
    refused = run("chat", "--adapter", "kill-me", "hi")
    assert refused.returncode == 1 and "no adapter named 'kill-me'" in refused.stderr
    assert not list((home / "adapters").glob(".kill-me.*"))  # ...removed by the next command
    ok("train", "--resume", "kill-me")
    gguf = home / "adapters" / "kill-me" / "adapter.gguf"
    check_gguf_complete(gguf)
    # a merged export killed mid-write: no file under the export's name, nothing registered
    kill_at("export.gguf_written", "adapters", "export", "kill-me", "--merged", "f16")
    assert not (home / "adapters" / "kill-me" / "merged-f16.gguf").exists()
    ok("adapters", "runs")
    assert not list((home / "adapters" / "kill-me").glob(".*"))
    conn = checked_db(home)
    assert json.loads(conn.execute("SELECT exports_json FROM adapters").fetchone()[0]) == {}
    conn.close()
    # a deletion killed after its files were moved aside: the next command puts them back
    kill_at("delete.files_moved", "adapters", "delete", "kill-me")
    assert "kill-me" in ok("adapters").stdout
    assert gguf.is_file() and (home / "runs" / "kill-me").is_dir()
    ok("adapters", "delete", "kill-me")
    conn = checked_db(home)
    assert count(conn, "adapters") == 0 and count(conn, "runs") == 0
    assert not (home / "adapters" / "kill-me").exists() and not (home / "runs" / "kill-me").exists()
    assert not [p for p in (home / "adapters").iterdir() if "trash" in p.name]


@pytest.mark.slow
def test_kill_during_feedback_training_then_resume(home: Path, conn, base_pair) -> None:
    from feedback_support import rate_helpful_vs_rude

    rate_helpful_vs_rude(conn, 8)
    args = [
        "feedback",
        "train",
        "--method",
        "reward",
        "--name",
        "rm",
        "--hf-dir",
        str(base_pair.hf_dir),
        "--model",
        str(base_pair.gguf_path),
        "--steps",
        "4",
        "--save-steps",
        "2",
        "--batch-size",
        "2",
        "--max-length",
        "64",
    ]
    kill_at("train.checkpoint_saved", *args)
    db = checked_db(home)
    assert count(db, "ratings") == 16 and not (home / "reward_models" / "rm").exists()
    db.close()
    assert "interrupted" in runs_line("rm") and "checkpoint-2" in runs_line("rm")
    ok("feedback", "train", "--resume", "rm")
    db = checked_db(home)
    assert tuple(db.execute("SELECT status, step FROM runs").fetchone()) == ("done", 4)
    assert (home / "reward_models" / "rm").is_dir()


def compare_outcome(home: Path) -> tuple[list[tuple], str]:  # type: ignore[type-arg]
    """Every stored answer (arm, item, output, scores, examples, token counts) and the report's
    verdict and metric table: all of it but timings and paths."""
    conn = checked_db(home)
    try:
        answers = [
            tuple(r)
            for r in conn.execute(
                "SELECT arm, position, output, scores_json, examples_json, prompt_tokens, completion_tokens, finish_reason"
                " FROM comparison_results ORDER BY arm, position"
            )
        ]
    finally:
        conn.close()
    (report,) = (home / "reports").glob("*/report.json")
    data = json.loads(report.read_text(encoding="utf-8"))
    return answers, json.dumps([data.get("verdict"), [(a.get("arm"), a.get("metrics")) for a in data.get("arms", [])]], sort_keys=True)


@pytest.mark.slow
def test_kill_between_compare_answers_then_rerun_equals_an_uninterrupted_run(home: Path, tmp_path: Path) -> None:
    args = [
        "compare",
        "--bank",
        "sent",
        "--no-adapter",
        "--selectors",
        "jaccard",
        "--k",
        "2",
        "--limit",
        "3",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--n-ctx",
        "1024",
    ]
    ok("bank", "import-demo", "sentiment", "--size", "30", "--name", "sent")
    kill_at("compare.result_stored", *args)
    conn = checked_db(home)
    assert count(conn, "comparison_results") == 1
    conn.close()
    ok(*args)
    conn = checked_db(home)
    assert count(conn, "comparisons") == 1 and count(conn, "comparison_results") == 6  # 2 arms x 3 items, none twice
    conn.close()
    other = tmp_path / "uninterrupted"
    env = {"TUNELAB_HOME": str(other)}
    ok("bank", "import-demo", "sentiment", "--size", "30", "--name", "sent", env=env)
    ok(*args, env=env)
    resumed, uninterrupted = compare_outcome(home), compare_outcome(other)
    assert len(resumed[0]) == 6 and resumed == uninterrupted
    ok("reports", "delete", "1")
    conn = checked_db(home)
    assert count(conn, "comparisons") == 0 and count(conn, "comparison_results") == 0
    assert not (home / "reports" / "1").exists()
