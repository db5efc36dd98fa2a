"""`tunelab feedback train` and what uses its results, as a user runs them (real processes)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cli_support import assert_clean_error, invoke
from conftest import THREADS
from feedback_support import rate, rate_helpful_vs_rude
from finetune_support import base_pair  # noqa: F401
from llama_cpp_source import llama_server
from server_support import llama_server_process
from test_feedback_cli import run
from test_tui_icl import send
from textual.widgets import Input, Select, Static

from tunelab.stores.conversations import ConversationStore
from tunelab.tui.app import TunelabApp
from tunelab.tui.widgets.chat.message_view import MessageView


@pytest.mark.heavy
@pytest.mark.slow
def test_feedback_train_reward_prints_progress_and_the_model_is_usable(settings, conn, base_pair) -> None:
    rate_helpful_vs_rude(conn, 8)
    trained = run(
        "feedback",
        "train",
        "--method",
        "reward",
        "--name",
        "rm",
        "--model",
        str(base_pair.gguf_path),
        "--hf-dir",
        str(base_pair.hf_dir),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--max-length",
        "96",
    )
    assert trained.returncode == 0, trained.stderr
    assert "training reward 'rm' on 6 pairs (2 held out) (cpu)" in trained.stderr
    assert "[########################] 3/3 · loss" in trained.stderr  # the same progress line as `tunelab train`
    assert "reward 'rm': loss" in trained.stdout and "held-out pair accuracy" in trained.stdout
    assert "--reward-model rm" in trained.stdout
    # chat --best-of: N sampled replies, the reward model's favourite kept, every score shown.
    best = run(
        "chat",
        "--json",
        "--best-of",
        "2",
        "--reward-model",
        "rm",
        "--max-tokens",
        "6",
        "--temperature",
        "0.8",
        "--model",
        str(base_pair.gguf_path),
        "What is 3 plus 4?",
    )
    assert best.returncode == 0, best.stderr
    record = json.loads(best.stdout)
    scores = [c["score"] for c in record["best_of"]["candidates"]]
    assert len(scores) == 2 and record["best_of"]["reward_model"] == "rm"
    assert record["text"] == record["best_of"]["candidates"][scores.index(max(scores))]["text"]
    assert "[best of 2 by reward model rm]" in best.stderr and best.stderr.count("score ") == 2
    # best-of through llama.cpp's own llama-server: the candidates sampled there, scored here
    question = ["--max-tokens", "6", "--temperature", "0.8", "--model", str(base_pair.gguf_path), "What is 3 plus 4?"]
    with llama_server_process(llama_server(), base_pair.gguf_path, [], slots=1, n_threads=THREADS) as url:
        served = run("chat", "--json", "--best-of", "2", "--reward-model", "rm", "--engine-url", url, *question)
    seed = str(json.loads(served.stdout)["best_of"]["candidates"][0]["seed"])
    with llama_server_process(llama_server(), base_pair.gguf_path, [], slots=1, n_threads=THREADS) as fresh:
        again = run("chat", "--json", "--seed", seed, "--engine-url", fresh, *question)  # a cold cache, as the first candidate met
    assert served.returncode == again.returncode == 0, served.stderr + again.stderr
    record = json.loads(served.stdout)
    candidates = record["best_of"]["candidates"]
    scores = [c["score"] for c in candidates]
    assert len(candidates) == 2 and len({c["seed"] for c in candidates}) == 2
    assert record["text"] == candidates[scores.index(max(scores))]["text"]
    assert json.loads(again.stdout)["text"] == candidates[0]["text"]  # a candidate's seed gives it back from the server
    stored = ConversationStore(conn).messages(record["conversation_id"])[-1]
    assert stored.provenance["engine_url"] == url and stored.provenance["best_of"]["reward_model"] == "rm"
    assert_clean_error(
        run("chat", "--best-of", "2", "--temperature", "0", "--model", str(base_pair.gguf_path), "hi"), "best-of needs sampling"
    )
    assert_clean_error(invoke("chat", "--reward-model", "rm", "hi"), "add --best-of N")

    # The compare report gets the reward model's column (mean reward, win-rate vs the first arm).
    assert run("bank", "import-demo", "sentiment", "--size", "12").returncode == 0
    compared = run(
        "compare",
        "--bank",
        "sentiment",
        "--limit",
        "2",
        "--selectors",
        "random",
        "--k",
        "1",
        "--no-adapter",
        "--max-tokens",
        "4",
        "--reward-model",
        "rm",
        "--model",
        str(base_pair.gguf_path),
    )
    assert compared.returncode == 0, compared.stderr
    assert "## Reward model `rm`" in compared.stdout and "| base+random@1 |" in compared.stdout
    assert_clean_error(invoke("compare", "--bank", "sentiment", "--reward-model", "nope"), "no training run 'nope'")
    # best-of with in-context examples: every candidate sees the same examples, recorded with the pick.
    best_icl = run(
        "chat",
        "--json",
        "--best-of",
        "2",
        "--reward-model",
        "rm",
        "--bank",
        "sentiment",
        "--selector",
        "jaccard",
        "--k",
        "1",
        "--max-tokens",
        "4",
        "--temperature",
        "0.8",
        "--model",
        str(base_pair.gguf_path),
        "A fine film.",
    )
    assert best_icl.returncode == 0, best_icl.stderr
    record = json.loads(best_icl.stdout)
    assert len(record["icl"]["examples"]) == 1 and len(record["best_of"]["candidates"]) == 2
    assert "1 example(s) from sentiment by jaccard" in best_icl.stderr
    asyncio.run(best_of_in_the_tui(settings, conn, base_pair.gguf_path))

    runs = run("adapters", "runs")
    assert "rm" in runs.stdout and "done" in runs.stdout

    assert_clean_error(
        invoke("feedback", "train", "--method", "reward", "--name", "rm", "--hf-dir", str(base_pair.hf_dir)), "a run named 'rm' exists"
    )
    assert_clean_error(invoke("feedback", "train", "--resume", "rm"), "run 'rm' is already done")
    assert_clean_error(invoke("feedback", "train", "--resume", "rm", "--steps", "2"), "give only --resume RUN")


async def best_of_in_the_tui(settings, conn, model: Path) -> None:
    """The chat screen's best-of panel: the reward model picks among n sampled replies, scores listed."""
    settings.model = str(model)
    ConversationStore(conn).create("best-of", params={"max_tokens": 4, "temperature": 0.8})
    app = TunelabApp(settings, conn)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        screen.query_one("#best-of-model", Select).value = "rm"
        screen.query_one("#best-of-n", Input).value = "2"
        screen.query_one("#prompt", Input).focus()
        await send(pilot, "Say hi")
        await app.workers.wait_for_complete()
        await pilot.pause()
        view = [v for v in screen.query(MessageView) if v.role == "assistant"][-1]
        best_of = view.message.provenance["best_of"]
        assert best_of["reward_model"] == "rm" and len(best_of["candidates"]) == 2
        assert view.message.content == best_of["candidates"][best_of["chosen"]]["text"] == view.body.source
        assert "best of 2 by rm" in str(screen.query_one("#best-of-scores", Static).render())

        screen.query_one("#best-of-n", Input).value = "1"  # refused before anything is stored
        screen.query_one("#prompt", Input).focus()
        await send(pilot, "again")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("best-of n must be between 2" in n.message for n in app._notifications)
        assert len(ConversationStore(conn).messages(view.message.conversation_id)) == 2


def test_feedback_train_bad_input_is_one_line(conn) -> None:
    assert_clean_error(invoke("feedback", "train"), "give --method kto, dpo, reward, grpo or rloo")
    assert_clean_error(invoke("feedback", "train", "--method", "kto"), "no ratings yet")
    rate(conn, "Say hi", "Hi!", "up")
    assert_clean_error(invoke("feedback", "train", "--method", "kto"), "only 1 rating(s): rate 7 more replies")
    assert_clean_error(invoke("feedback", "train", "--method", "dpo"), "no preference pairs")
    assert_clean_error(invoke("feedback", "train", "--method", "kto", "--batch-size", "1"), "batch_size must be >= 2")
    assert_clean_error(invoke("feedback", "train", "--resume", "nope"), "no training run 'nope'")
