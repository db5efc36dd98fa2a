"""The remote engine against a real OpenAI-compatible server: llama-cpp-python's, on loopback.

The server serves the bundled model, and the trained adapter as a second model entry (its
`lora_path`); tunelab's chat, ICL, compare and the app run through it and must answer exactly as
llama.cpp in this process does. Faults: a server that is down, a wrong URL, a 500, an adapter the
server lacks and a stream cut mid-reply (the server killed) each give one line and store nothing
but the partial reply.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from compare_support import base_pair, few_step_adapter, sentiment_bank  # noqa: F401
from server_support import free_port, llama_cpp_server

from tunelab.cli import cli
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.chat_service import ChatService, IclRequest
from tunelab.runtime.compare import run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import bank_test_set
from tunelab.stores.comparisons import ComparisonStore
from tunelab.stores.conversations import ConversationStore
from tunelab.stores.runs import adapter_gguf


def _answers(runtime: Runtime, bank, adapter: str) -> tuple[dict[tuple[str, int], str], dict[tuple[str, int], int]]:
    """Greedy outputs and prompt tokens of zero-shot, ICL and adapter arms on three held-out items."""
    arms = [Arm(), Arm(None, "jaccard", 2), Arm(adapter)]
    comparison = run_comparison(ArmRunner(runtime, bank), bank_test_set(runtime.conn, bank, limit=3), arms, greedy(8))
    results = ComparisonStore(runtime.conn).results(comparison.id)
    return {(r.arm, r.position): r.output for r in results}, {(r.arm, r.position): r.prompt_tokens for r in results}


@pytest.mark.slow
def test_chat_icl_and_compare_through_a_server_answer_as_llama_cpp_here(
    settings, conn, engine, bundled_model, sentiment_bank, few_step_adapter, tmp_path
):
    adapter_file = adapter_gguf(conn, few_step_adapter)
    models = [
        {"model": str(bundled_model), "model_alias": "smollm2"},
        {"model": str(bundled_model), "model_alias": few_step_adapter, "lora_path": str(adapter_file)},
    ]
    local = Runtime(settings, conn, engine=engine)
    # the grid sends two requests at a time: the server must not cut a streamed reply off for the next
    with llama_cpp_server(models, tmp_path, interrupt_requests=False) as (url, _):
        remote = Runtime(replace(settings, engine_url=url, parallel=2), conn)

        # chat: the same greedy reply, token counts from the server's usage, the server in the provenance
        question = "What is the capital of France?"
        here = ChatService(local).send(None, question, greedy(24))
        there = ChatService(remote).send(None, question, greedy(24))
        assert there.reply.text() == here.reply.text() != ""
        assert there.reply.stats.prompt_tokens == here.reply.stats.prompt_tokens
        assert there.reply.stats.completion_tokens == here.reply.stats.completion_tokens
        stored = there.save()
        assert stored.provenance["engine_url"] == url and stored.provenance["server_model"] == "smollm2"
        assert not stored.interrupted and stored.finish_reason == here.reply.stats.finish_reason == "length"

        # an ICL reply: the same examples chosen, the same answer
        icl = IclRequest(sentiment_bank.name, "jaccard", 2)
        query = "A tedious, joyless film."
        here_icl = ChatService(local).send(None, query, greedy(8), icl)
        there_icl = ChatService(remote).send(None, query, greedy(8), icl)
        assert there_icl.reply.text() == here_icl.reply.text()
        assert there_icl.provenance.example_ids == here_icl.provenance.example_ids and len(there_icl.provenance.example_ids) == 2

        # a small compare: zero-shot, ICL and the adapter (served as its own model entry)
        outputs_here, tokens_here = _answers(local, sentiment_bank, few_step_adapter)
        outputs_there, tokens_there = _answers(remote, sentiment_bank, few_step_adapter)
        assert outputs_there == outputs_here and len(outputs_here) == 9
        assert tokens_there == tokens_here
        adapter_rows = [r for r in ComparisonStore(conn).results(ComparisonStore(conn).list()[0].id) if r.arm.startswith("lora:")]
        assert {r.provenance["server_model"] for r in adapter_rows} == {few_step_adapter}

        # the CLI flag: one streamed reply through the server
        flags = ["chat", "--temperature", "0", "--max-tokens", "24", question]
        through_server = CliRunner().invoke(cli, ["--engine-url", url, *flags])
        in_process = CliRunner().invoke(cli, flags)
        assert through_server.exit_code == in_process.exit_code == 0, through_server.output
        assert through_server.output.splitlines()[0] == in_process.output.splitlines()[0] != ""
        remote.close()

    # a server without the adapter: the arm is refused before a comparison exists
    comparisons = len(ComparisonStore(conn).list())
    with llama_cpp_server(models[:1], tmp_path) as (url, _):
        remote = Runtime(replace(settings, engine_url=url), conn)
        with pytest.raises(TunelabError, match=f"does not serve adapter '{few_step_adapter}'"):
            run_comparison(
                ArmRunner(remote, sentiment_bank), bank_test_set(conn, sentiment_bank, limit=2), [Arm(few_step_adapter)], greedy(4)
            )
        assert len(ComparisonStore(conn).list()) == comparisons


class FailingServer(BaseHTTPRequestHandler):
    """An OpenAI-style server whose completions fail with a 500 (a real llama-cpp-python server
    answers errors inside the 200 stream, so a 500 needs a server made to fail)."""

    def do_GET(self) -> None:
        self._json(200, {"object": "list", "data": [{"id": "broken", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/extras/tokenize/count":
            self._json(200, {"count": 7})
        else:
            self._json(500, {"error": {"message": "CUDA error: out of memory"}})

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FailingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _one_line_failure(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.slow
def test_server_faults_are_one_line_and_keep_only_the_partial_reply(settings, conn, bundled_model, failing_server, tmp_path):
    conversations = ConversationStore(conn)
    down = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach the engine" in _one_line_failure(["chat", "--engine-url", down, "Hi"])
    assert "answered 500" in _one_line_failure(["chat", "--engine-url", failing_server, "Hi"])
    assert "bad engine URL" in _one_line_failure(["chat", "--engine-url", "gpu-box:8080", "Hi"])
    assert conversations.list() == []

    with llama_cpp_server([{"model": str(bundled_model), "model_alias": "smollm2"}], tmp_path) as (url, process):
        assert "answered 404" in _one_line_failure(["chat", "--engine-url", f"{url}/docs", "Hi"])

        remote = Runtime(replace(settings, engine_url=url), conn)

        # the server killed mid-reply: the text so far is stored, marked interrupted, and nothing else
        turn = ChatService(remote).send(
            None, "Write a long story about a dragon and a knight.", SamplerParams(temperature=0, max_tokens=400)
        )
        chunks = iter(turn.reply)
        first = next(chunks)
        process.kill()
        rest = "".join(chunks)
        assert turn.reply.stats.finish_reason == "error" and "broke off mid-reply" in (turn.reply.stats.error or "")
        message = turn.save()
        assert message.interrupted and message.content == first + rest != ""
        (conversation,) = conversations.list()
        assert [m.role for m in conversations.messages(conversation.id)] == ["user", "assistant"]


async def test_the_app_chats_through_a_server_and_a_dead_server_stores_nothing(settings, conn, bundled_model, tmp_path):
    from tunelab.tui.app import TunelabApp
    from tunelab.tui.widgets.chat.message_view import MessageView

    conversations = ConversationStore(conn)
    with llama_cpp_server([{"model": str(bundled_model), "model_alias": "smollm2"}], tmp_path) as (url, process):
        app = TunelabApp(replace(settings, engine_url=url), conn)
        async with app.run_test(size=(110, 32)) as pilot:
            for text in ("Hi", "Again"):
                app.screen.query_one("#prompt").focus()
                for key in text:
                    await pilot.press(key)
                await pilot.press("enter")
                await app.workers.wait_for_complete()
                await pilot.pause()
                if text == "Hi":
                    reply = list(app.screen.query(MessageView))[-1].message
                    assert reply is not None and reply.content and reply.provenance["engine_url"] == url
                    assert url in app.screen.sub_title
                    process.kill()
                    process.wait()
            assert any("cannot reach the engine" in str(n.message) for n in app._notifications)
    (conversation,) = conversations.list()
    assert [m.role for m in conversations.messages(conversation.id)] == ["user", "assistant"]
