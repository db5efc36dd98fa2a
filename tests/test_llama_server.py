"""The remote engine against llama.cpp's own `llama-server` (issue 29), built from the vendored
llama.cpp of the installed llama-cpp-python (tests/llama_cpp_source.py), on loopback.

The server serves the bundled model with two LoRAs loaded and chosen per request
(`lora: [{id, scale}]`). Chat, ICL, a compare grid with base and both adapters, and the F3
side-by-side must answer exactly as llama.cpp in this process does. The adapters are random
(seeded) LoRAs on q/v: they move the greedy answers far from the base's, so a reply computed on
KV cached under another adapter would show.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from compare_support import sentiment_bank  # noqa: F401
from finetune_support import base_pair, registered_adapter  # noqa: F401
from llama_cpp_source import llama_server
from server_support import llama_server_process

from tunelab.engine.chat_template import ChatMessage
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.runtime.chat_service import ChatService, IclRequest
from tunelab.runtime.compare import ArmRunner, bank_test_set, greedy, run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.stores.comparisons import ComparisonStore
from tunelab.stores.runs import adapter_gguf

from conftest import THREADS

ADAPTERS = ("rand-a", "rand-b")


@pytest.fixture
def adapters(conn, home: Path, base_pair) -> list[Path]:
    """Two registered random LoRAs; their GGUFs are what the server loads."""
    return [registered_adapter(conn, home, base_pair, name, seed) / "adapter.gguf" for seed, name in enumerate(ADAPTERS)]


def grid(runtime: Runtime, bank) -> dict[tuple[str, int], tuple[str, int]]:
    """(output, prompt tokens) of zero-shot, ICL and both adapters on three held-out items."""
    arms = [Arm(), Arm(None, "jaccard", 2), *(Arm(name) for name in ADAPTERS)]
    comparison = run_comparison(ArmRunner(runtime, bank), bank_test_set(runtime.conn, bank, limit=3), arms, greedy(8))
    return {(r.arm, r.position): (r.output, r.prompt_tokens) for r in ComparisonStore(runtime.conn).results(comparison.id)}


@pytest.mark.slow
def test_llama_server_answers_chat_icl_and_a_two_adapter_grid_as_llama_cpp_here(
    settings, conn, engine, bundled_model, sentiment_bank, adapters, home, base_pair, tmp_path
):
    local = Runtime(settings, conn, engine=engine)
    with llama_server_process(llama_server(), bundled_model, adapters, slots=3, n_threads=THREADS) as (url, _):
        remote = Runtime(replace(settings, engine_url=url), conn)

        question = "What is the capital of France?"
        here = ChatService(local).send(None, question, greedy(24))
        there = ChatService(remote).send(None, question, greedy(24))
        assert there.reply.text() == here.reply.text() != ""
        assert (there.reply.stats.prompt_tokens, there.reply.stats.completion_tokens) == (
            here.reply.stats.prompt_tokens,
            here.reply.stats.completion_tokens,
        )
        assert there.save().provenance["engine_url"] == url

        icl = IclRequest(sentiment_bank.name, "jaccard", 2)
        here_icl = ChatService(local).send(None, "A tedious, joyless film.", greedy(8), icl)
        there_icl = ChatService(remote).send(None, "A tedious, joyless film.", greedy(8), icl)
        assert there_icl.reply.text() == here_icl.reply.text()
        assert there_icl.provenance.example_ids == here_icl.provenance.example_ids

        answers_here, answers_there = grid(local, sentiment_bank), grid(remote, sentiment_bank)
        assert answers_there == answers_here and len(answers_here) == 12
        by_arm = {arm: [out for (a, _), (out, _) in answers_here.items() if a == arm] for arm in ("base", *(f"lora:{n}" for n in ADAPTERS))}
        assert by_arm["lora:rand-a"] != by_arm["base"] and by_arm["lora:rand-b"] != by_arm["base"]  # the adapters change answers

        # an adapter the server has not loaded: refused before a comparison exists
        registered_adapter(conn, home, base_pair, "rand-c", seed=7)
        comparisons = len(ComparisonStore(conn).list())
        with pytest.raises(TunelabError, match="has not loaded adapter 'rand-c': start it with --lora"):
            run_comparison(ArmRunner(remote, sentiment_bank), bank_test_set(conn, sentiment_bank, limit=2), [Arm("rand-c")], greedy(4))
        assert len(ComparisonStore(conn).list()) == comparisons
        remote.close()


@pytest.mark.slow
@pytest.mark.parametrize("slots", [3, 1])
def test_alternating_adapters_on_one_prefix_never_answer_from_another_adapters_cache(
    settings, conn, engine, bundled_model, adapters, slots
):
    """Three settings on one long shared prefix, in an order that switches at every request: with
    a slot per setting (3) and with all of them on one slot (1), every answer equals the one llama.cpp
    here gives from a clean cache for that setting (llama-server issue #26207 reused the cache)."""
    prefix = "You label film reviews. " + " ".join(f"Review {i}: a film with scenes, actors and a plot." for i in range(12))
    messages = [ChatMessage("system", prefix), ChatMessage("user", "Review: a moving, wonderful film. Label:")]
    order = [None, "rand-a", "rand-b", "rand-a", None, "rand-b", "rand-b", None, "rand-a"]
    local = Runtime(settings, conn, engine=engine)
    expected = {name: local.engine_for(name).chat(messages, greedy(12)).text() for name in (None, *ADAPTERS)}
    assert len(set(expected.values())) == 3  # the settings answer differently, so a mix-up would show
    with llama_server_process(llama_server(), bundled_model, adapters, slots=slots, n_threads=THREADS) as (url, _):
        remote = Runtime(replace(settings, engine_url=url), conn)
        answers = [(name, remote.engine_for(name).chat(messages, greedy(12)).text()) for name in order]
        remote.close()
    assert answers == [(name, expected[name]) for name in order]
