"""Two writers at once, damaged files, untrusted files, and runs that know whether they are alive.

Real processes on one data dir (8 `tunelab chat`s, two `tunelab train`s, the TUI beside the CLI),
a database of random bytes, a damaged Chroma store, a truncated adapter GGUF, a full disk
(RLIMIT_FSIZE in the child), a chat template reaching for Python internals, pickles where weights
belong. docs/reliability.md tabulates these cases with the fault-injection ones.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cli_support import invoke
from fault_support import TUNELAB, checked_db, count, ok, run
from finetune_support import base_pair, registered_adapter  # noqa: F401
from test_selectors import chroma_server  # noqa: F401

from tunelab.errors import TunelabError


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], result.stderr


# -- runs that know whether they are alive -----------------------------------------------------


def test_a_running_row_whose_process_is_gone_reads_as_interrupted(conn, home: Path) -> None:
    from tunelab.stores import liveness
    from tunelab.stores.runs import RunStore

    store = RunStore(conn)
    run_ = store.create("ghost", Path("b.gguf"), "sha", Path("hf"), "bank", [1], {}, home / "runs" / "ghost", "cpu")
    me = liveness.current()
    assert (run_.pid, run_.proc_start, run_.host) == (me.pid, me.start, me.host) and run_.heartbeat_at
    assert store.get("ghost").status == "running"  # this process is alive
    child = subprocess.Popen(["sleep", "30"])
    child_start = liveness.start_time(child.pid)
    conn.execute("UPDATE runs SET pid = ?, proc_start = ? WHERE id = ?", (child.pid, child_start, run_.id))
    assert store.get("ghost").status == "running"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert store.get("ghost").status == "interrupted"
    conn.execute("UPDATE runs SET pid = ?, proc_start = '1' WHERE id = ?", (os.getpid(), run_.id))
    assert store.get("ghost").status == "interrupted"  # the pid was reused by another process: still gone
    conn.execute("UPDATE runs SET host = 'elsewhere', heartbeat_at = '2020-01-01T00:00:00+00:00' WHERE id = ?", (run_.id,))
    assert store.get("ghost").status == "interrupted"  # another host: a stale heartbeat decides
    with pytest.raises(TunelabError, match="restart"):
        store.restart(store.create("live", Path("b"), "s", Path("h"), "b", [], {}, home / "runs" / "live", "cpu").id)


def test_adapters_runs_shows_a_killed_run_as_interrupted_with_its_step_and_checkpoint_and_deletes_it(conn, home: Path) -> None:
    from tunelab.stores import liveness
    from tunelab.stores.runs import RunStore

    store = RunStore(conn)
    ghost = store.create("ghost", Path("b.gguf"), "sha", Path("hf"), "bank", [1], {}, home / "runs" / "ghost", "cpu")
    store.progress(ghost.id, 3, 8, [{"step": 3, "loss": 1.5, "lr": 0.0, "tokens_per_s": 0.0}])
    (home / "runs" / "ghost" / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    child = subprocess.Popen(["sleep", "30"])
    conn.execute("UPDATE runs SET pid = ?, proc_start = ? WHERE id = ?", (child.pid, liveness.start_time(child.pid), ghost.id))
    assert "running" in ok("adapters", "runs").stdout
    child.send_signal(signal.SIGKILL)  # what `kill -9` of `tunelab train` leaves: a running row, no process
    child.wait()
    (line,) = ok("adapters", "runs").stdout.splitlines()
    assert "interrupted" in line and "step 3/8" in line and "last checkpoint checkpoint-2" in line
    assert "deleted 'ghost'" in ok("adapters", "delete", "ghost").stdout
    assert store.list() == [] and not (home / "runs" / "ghost").exists()
    one_line_error(invoke("adapters", "delete", "ghost"), "no training run 'ghost'")


def test_delete_refuses_a_live_run_and_removes_rows_and_files_of_a_stopped_one(conn, home: Path) -> None:
    from tunelab.stores.runs import Adapter, RunStore

    store = RunStore(conn)
    run_ = store.create("gone", Path("b.gguf"), "sha", Path("hf"), "bank", [1], {}, home / "runs" / "gone", "cpu")
    (home / "runs" / "gone" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    with pytest.raises(TunelabError, match="still training"):
        store.delete("gone", home)
    adapter_dir = home / "adapters" / "gone"
    adapter_dir.mkdir(parents=True)
    (adapter_dir / "adapter.gguf").write_bytes(b"GGUF")
    store.add_adapter(Adapter("gone", run_.id, "bank", "sha", str(adapter_dir), str(adapter_dir / "adapter.gguf")))
    removed = store.delete("gone", home)
    assert home / "runs" / "gone" in removed and adapter_dir in removed
    assert not (home / "runs" / "gone").exists() and not adapter_dir.exists()
    assert store.list() == [] and store.adapters() == [] and not list((home / ".trash").iterdir())


def test_sweep_puts_back_the_files_of_a_deletion_killed_before_its_rows_went(conn, home: Path) -> None:
    from tunelab.config import DataDir
    from tunelab.stores.trash import sweep

    folder = home / "reports" / "7"
    folder.mkdir(parents=True)
    (folder / "report.md").write_text("kept")
    conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO things VALUES (7), (8)")
    trashed = folder.with_name(".7.trash-abc")
    folder.rename(trashed)  # what a deletion killed between its rename and its transaction leaves
    trash = DataDir(home).trash
    trash.mkdir()
    (trash / "abc.json").write_text(json.dumps({"table": "things", "column": "id", "key": 7, "moves": [[str(folder), str(trashed)]]}))
    other = home / "reports" / "8"
    other.with_name(".8.trash-def").mkdir()
    (trash / "def.json").write_text(
        json.dumps({"table": "things", "column": "id", "key": 9, "moves": [[str(other), str(other.with_name(".8.trash-def"))]]})
    )
    assert sweep(conn, home) == 2
    assert (folder / "report.md").read_text() == "kept" and not trashed.exists()  # row still there: restored
    assert not other.with_name(".8.trash-def").exists() and not other.exists()  # row gone: trash removed
    assert not list(trash.iterdir())


def test_a_refused_first_prompt_leaves_no_empty_conversation(home: Path, tmp_path: Path) -> None:
    rows = tmp_path / "tiny.jsonl"
    rows.write_text("".join(json.dumps({"input": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(5)))
    ok("bank", "import", "tiny", str(rows), "--test-size", "0.2")
    one_line_error(run("chat", "--bank", "tiny", "--selector", "jaccard", "--k", "9", "hi"), "k = 9 is larger")
    one_line_error(run("chat", "--n-ctx", "256", "word " * 400), "")
    conn = checked_db(home)
    assert count(conn, "conversations") == 0 and count(conn, "messages") == 0


# -- two writers at once -----------------------------------------------------------------------


@pytest.mark.slow
def test_eight_parallel_chats_on_one_data_dir(home: Path) -> None:
    procs = [
        subprocess.Popen(
            [*TUNELAB, "chat", "--json", "--max-tokens", "3", "--temperature", "0", "--threads", "1", f"Say {i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert "locked" not in err
    conn = checked_db(home)
    assert count(conn, "conversations") == 8 and count(conn, "messages", "role = 'assistant'") == 8
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len({json.loads(out)["conversation_id"] for out, _ in outputs}) == 8


@pytest.mark.slow
def test_two_first_trainings_at_once_dequantise_the_base_once(home: Path, bundled_model: Path) -> None:
    ok("bank", "import-demo", "sentiment", "--size", "12", "--name", "sent")
    args = ["--bank", "sent", "--max-steps", "1", "--save-steps", "5", "--batch-size", "1", "--max-length", "48", "--r", "2"]
    procs = [
        subprocess.Popen([*TUNELAB, "train", name, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("first", "second")
    ]
    seen: set[int] = set()
    while any(p.poll() is None for p in procs):  # every folder that ever stands under the cache's name
        seen |= {c.stat().st_ino for c in (home / "models").glob("[0-9a-f]*") if c.is_dir() and not c.name.startswith(".")}
        time.sleep(0.05)
    for p in procs:
        _out, err = p.communicate()
        assert p.returncode == 0, err
    caches = [c for c in (home / "models").iterdir() if c.is_dir()]
    assert len(caches) == 1 and len(seen) == 1  # written once, renamed into place once, never replaced
    conn = checked_db(home)
    assert count(conn, "adapters") == 2


async def test_the_tui_streams_a_reply_while_the_cli_rates_another(settings, conn, home: Path) -> None:
    from test_tui_chat import SIZE, make_app, send

    from tunelab.stores.conversations import ConversationStore

    first = json.loads(ok("chat", "--json", "--max-tokens", "3", "--temperature", "0", "Say hi").stdout)
    store = ConversationStore(conn)
    # the screen opens the newest; 2000 tokens outlast the CLI's rating even on a loaded machine
    store.update(first["conversation_id"], params={"max_tokens": 2000, "temperature": 0})
    app = make_app(settings, conn)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Write a very long story about a lighthouse keeper.")
        for _ in range(400):
            await pilot.pause(0.05)
            if app.screen.streaming is not None and app.screen.streaming.body.source:
                break
        assert app.screen.streaming is not None  # streaming now
        rated = await asyncio_run(["rate", str(first["message_id"]), "up"])
        assert rated.returncode == 0 and "locked" not in rated.stderr, rated.stderr
        still_streaming = app.screen.streaming is not None
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert still_streaming  # the CLI's write landed while the TUI was generating
    messages = store.messages(first["conversation_id"])
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"] and messages[-1].content
    assert checked_db(home).execute("SELECT rating FROM ratings").fetchone()[0] == "up"


async def asyncio_run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread, so the TUI's event loop keeps streaming meanwhile."""
    import asyncio

    return await asyncio.to_thread(run, *args)


# -- damaged files -----------------------------------------------------------------------------


def test_a_database_of_random_bytes_is_named_and_never_overwritten(home: Path) -> None:
    home.mkdir(parents=True)
    damaged = os.urandom(64 * 1024)
    (home / "tunelab.db").write_bytes(damaged)
    result = run("history", "list")
    one_line_error(result, str(home / "tunelab.db"), "is damaged", "move it aside")
    assert (home / "tunelab.db").read_bytes() == damaged


def test_a_damaged_or_deleted_chroma_store_is_rebuilt_from_sqlite(home: Path, tmp_path: Path) -> None:
    rows = tmp_path / "r.jsonl"
    rows.write_text("".join(json.dumps({"input": f"question {i}", "output": f"a{i}"}) + "\n" for i in range(30)))
    ok("bank", "import", "b", str(rows), "--test-size", "0.2")
    assert "24 example(s) embedded, 24 in the index" in ok("bank", "index", "b").stdout
    (home / "chroma" / "chroma.sqlite3").write_bytes(os.urandom(64 * 1024))
    rebuilt = ok("bank", "index", "b")
    assert "was damaged" in rebuilt.stderr and "rebuilding the index from the database" in rebuilt.stderr
    assert "24 example(s) embedded, 24 in the index" in rebuilt.stdout and "embedding" in rebuilt.stderr
    assert (home / "chroma.damaged").is_dir()
    import shutil

    shutil.rmtree(home / "chroma")
    assert "24 example(s) embedded, 24 in the index" in ok("bank", "index", "b").stdout
    assert "1 example(s) from b" in ok("chat", "--bank", "b", "--k", "1", "--max-tokens", "2", "question 3").stderr


def test_a_truncated_adapter_gguf_is_refused_before_llama_cpp_loads_it(conn, home: Path, base_pair) -> None:
    gguf = registered_adapter(conn, home, base_pair) / "adapter.gguf"
    data = gguf.read_bytes()
    gguf.write_bytes(data[: len(data) * 2 // 3])
    one_line_error(run("chat", "--model", str(base_pair.gguf_path), "--adapter", "rand", "hi"), "truncated or corrupt", str(gguf))


def limited(megabytes: float):  # type: ignore[no-untyped-def]
    """preexec_fn: the child may write no file beyond `megabytes` (a disk that fills up)."""
    limit = int(megabytes * 2**20)
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_full_disk_during_an_export_leaves_no_file_and_the_adapter_as_it_was(conn, home: Path, base_pair) -> None:
    peft = registered_adapter(conn, home, base_pair)
    before = sorted(p.name for p in peft.iterdir())
    result = run("adapters", "export", "rand", "--merged", "f16", preexec_fn=limited(20))
    one_line_error(result, "out of disk space")
    assert sorted(p.name for p in peft.iterdir()) == before  # no merged-f16.gguf, no temp file
    db = checked_db(home)
    assert json.loads(db.execute("SELECT exports_json FROM adapters").fetchone()[0]) == {}


def test_a_full_disk_during_a_database_write_rolls_back_and_keeps_the_data(home: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"input": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(20)))
    ok("bank", "import", "small", str(small))
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"input": f"question {i} " + "x" * 200, "output": f"a{i}"}) + "\n" for i in range(20000)))
    size_mb = sum(p.stat().st_size for p in home.glob("tunelab.db*")) / 2**20
    result = run("bank", "import", "big", str(big), preexec_fn=limited(size_mb + 1))
    one_line_error(result, "disk")
    conn = checked_db(home)
    assert count(conn, "banks") == 1 and count(conn, "examples") == 20
    conn.close()
    assert "bank 'big': added 20000" in ok("bank", "import", "big", str(big)).stdout  # with space again: no repair


# -- untrusted files ---------------------------------------------------------------------------


def test_a_chat_template_reaching_for_python_internals_is_refused(bundled_model: Path) -> None:
    from llama_cpp import Llama

    from tunelab.engine.chat_template import ChatMessage, ChatTemplate

    llama = Llama(model_path=str(bundled_model), vocab_only=True, verbose=False)
    try:
        assert "hi" in ChatTemplate(llama).render([ChatMessage("user", "hi")])  # the model's own template renders
        for escape in (
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "{{ cycler.__init__.__globals__.os }}",
            "{% for m in messages %}{{ m.__class__.__base__ }}{% endfor %}",
        ):
            llama.metadata["tokenizer.chat_template"] = escape
            with pytest.raises(TunelabError, match="refused the chat template") as refused:
                ChatTemplate(llama)
            assert "\n" not in str(refused.value)
    finally:
        llama.close()


def test_pickled_adapters_and_reward_models_are_never_loaded(tmp_path: Path, base_pair) -> None:
    import pickle

    from tunelab.finetune.methods.reward import RewardModel
    from tunelab.finetune.safe_files import safetensors_adapter

    marker = tmp_path / "pickle-ran"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    folder = tmp_path / "rm"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]}))
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Evil()))
    (folder / "tunelab.json").write_text(
        json.dumps(
            {"base_sha256": "sha", "base_dir": str(base_pair.hf_dir), "train_pairs": 1, "held_out_pairs": 1, "held_out_accuracy": None}
        )
    )
    with pytest.raises(TunelabError, match="pickles are never loaded"):
        safetensors_adapter(folder)
    with pytest.raises(TunelabError, match="pickles are never loaded"):
        RewardModel.load(folder, base_pair.hf_dir, "sha")  # PEFT alone would fall back to adapter_model.bin
    assert not marker.exists()


def test_the_data_dir_is_created_readable_by_its_owner_only(home: Path) -> None:
    ok("history", "list")
    assert home.stat().st_mode & 0o777 == 0o700


class TokenGate:
    """A token-checking HTTP front for a real `chroma run` (Chroma 1.x servers leave auth to a proxy,
    see cookbook.chromadb.dev/security/auth-1.0.x): 401 unless `Authorization: Bearer <token>`."""

    def __init__(self, upstream: str, token: str) -> None:
        import http.server
        import urllib.error
        import urllib.request

        gate = self
        self.allowed = self.refused = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def forward(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {token}":
                    gate.refused += 1
                    body = b'{"error": "Unauthorized", "message": "401 Unauthorized: token required"}'
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                gate.allowed += 1
                length = int(self.headers.get("Content-Length") or 0)
                request = urllib.request.Request(
                    upstream + self.path,
                    data=self.rfile.read(length) if length else None,
                    method=self.command,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, body, kind = response.status, response.read(), response.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as exc:
                    status, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "application/json")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: the system picks a free one
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.slow
def test_a_chroma_server_behind_token_auth_is_used_with_chroma_token(conn, settings, chroma_server, monkeypatch) -> None:
    from test_selectors import bank_of

    from tunelab.config import Settings
    from tunelab.icl.selectors import make_selector

    gate = TokenGate(chroma_server, "s3cret")
    try:
        texts = ["How do I reset my password?", "The soup was too salty.", "My login does not work any more."]
        bank = bank_of(conn, "support", texts)
        monkeypatch.setenv("TUNELAB_CHROMA_TOKEN", "s3cret")
        remote = Settings.load(chroma_url=gate.url)
        assert remote.chroma_token == "s3cret" and remote.describe()["chroma_token"] == "(set)"  # never printed
        selector = make_selector("embedding", bank, conn, remote)
        assert selector.select("can't log in", 1)[0].input in (texts[0], texts[2])
        assert gate.allowed > 0 and gate.refused == 0
        for token in ("", "wrong"):
            with pytest.raises(TunelabError, match="set chroma_token") as refused:
                make_selector("embedding", bank, conn, Settings(home=settings.home, chroma_url=gate.url, chroma_token=token))
            assert "\n" not in str(refused.value)
    finally:
        gate.server.shutdown()
