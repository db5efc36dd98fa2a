"""The remote engine against llama.cpp's own `llama-server` (issue 29), built from the vendored
llama.cpp of the installed llama-cpp-python (tests/llama_cpp_source.py), on loopback.

The server serves the bundled model with two LoRAs loaded and chosen per request
(`lora: [{id, scale}]`). Chat, ICL, a compare grid with base and both adapters, and the F3
side-by-side must answer exactly as llama.cpp in this process does. The adapters are random
(seeded) LoRAs on q/v: they move the greedy answers far from the base's, so a reply computed on
KV cached under another adapter would show.

"Exactly" needs the same cache state on both sides. Reusing a cached prefix evaluates the rest of
the prompt in a smaller batch, and on these flat random-LoRA distributions that alone can flip a
greedy token - in this process as on the server (seen: the same prompt asked twice on one adapter
gives a different second answer, here and there alike). So each expected answer is the in-process
one from the cache state the request meets on the server: cold (`cache_prompt: false`, tunelab's
default with LoRAs loaded) or, with `engine_prompt_cache` on a server started with
`--cache-ram 0`, warm when the slot last served the same setting.

Seen while writing these tests: with the RAM prompt cache on (llama-server's default) and
`cache_prompt` true within a setting, an adapter's answer to a zero-shot item changed when the
base arm had answered the same items before it (one slot, the adapter's first item sent cold),
and matched the in-process answer again with `--cache-ram 0`: the contamination of issue #26207,
apparently through the RAM cache instead of the slot.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from compare_support import sentiment_bank  # noqa: F401
from conftest import THREADS
from finetune_support import base_pair, registered_adapter  # noqa: F401
from llama_cpp_source import llama_server
from server_support import llama_server_process

from tunelab.engine.chat_template import ChatMessage
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.chat_service import ChatService, IclRequest
from tunelab.runtime.compare import run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import bank_test_set
from tunelab.stores.comparisons import ComparisonStore

ADAPTERS = ("rand-a", "rand-b")


@pytest.fixture
def adapters(conn, home: Path, base_pair) -> list[Path]:
    """Two registered random LoRAs; their GGUFs are what the server loads."""
    return [registered_adapter(conn, home, base_pair, name, seed) / "adapter.gguf" for seed, name in enumerate(ADAPTERS)]


def grid(runtime: Runtime, bank) -> dict[tuple[str, int], tuple[str, int]]:
    """(output, prompt tokens) of zero-shot, ICL and both adapters on two held-out items."""
    arms = [Arm(), Arm(None, "jaccard", 2), *(Arm(name) for name in ADAPTERS)]
    comparison = run_comparison(ArmRunner(runtime, bank), bank_test_set(runtime.conn, bank, limit=2), arms, greedy(8))
    return {(r.arm, r.position): (r.output, r.prompt_tokens) for r in ComparisonStore(runtime.conn).results(comparison.id)}


@pytest.mark.slow
def test_llama_server_answers_chat_icl_and_a_two_adapter_grid_as_llama_cpp_here(
    settings, conn, engine, bundled_model, sentiment_bank, adapters, home, base_pair, tmp_path
):
    local = Runtime(settings, conn, engine=engine)
    # one slot, no RAM cache, prompt reuse allowed: the server's cache is kept within a setting and
    # dropped on a switch, exactly as the in-process one is
    server = llama_server_process(llama_server(), bundled_model, adapters, slots=1, cache_ram=False, n_threads=THREADS)
    with server as url:
        remote = Runtime(replace(settings, engine_url=url, engine_prompt_cache=True), conn)

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
        assert answers_there == answers_here and len(answers_here) == 8
        by_arm = {arm: [out for (a, _), (out, _) in answers_here.items() if a == arm] for arm in ("base", *(f"lora:{n}" for n in ADAPTERS))}
        assert by_arm["lora:rand-a"] != by_arm["base"] and by_arm["lora:rand-b"] != by_arm["base"]  # the adapters change answers

        # an adapter the server has not loaded: refused before a comparison exists
        registered_adapter(conn, home, base_pair, "rand-c", seed=7)
        comparisons = len(ComparisonStore(conn).list())
        with pytest.raises(TunelabError, match="has not loaded adapter 'rand-c': start it with --lora"):
            run_comparison(ArmRunner(remote, sentiment_bank), bank_test_set(conn, sentiment_bank, limit=2), [Arm("rand-c")], greedy(4))
        assert len(ComparisonStore(conn).list()) == comparisons
        remote.close()


async def f3_round(settings, conn, runtime: Runtime, prompt: str) -> dict[str, str]:
    """One side-by-side round on F3 with the base and ICL arms; each column's text by arm."""
    from tunelab.tui.app import TunelabApp
    from tunelab.tui.screens.compare import CompareScreen
    from tunelab.tui.widgets.compare.arm_column import ArmColumn

    app = TunelabApp(settings, conn)
    async with app.run_test(size=(140, 44)) as pilot:
        await app.push_screen(CompareScreen(runtime, seed=3))
        await pilot.pause()
        screen = app.screen
        screen.query_one("#compare-arms").value = "base, base+jaccard@2"
        screen.query_one("#compare-prompt").focus()
        for key in prompt:
            await pilot.press(key if key != " " else "space")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(screen, CompareScreen) and screen.round is not None
        return {arm.name: column.text for arm, column in zip(screen.round.arms, screen.query(ArmColumn))}


@pytest.mark.slow
async def test_the_f3_side_by_side_through_llama_server_shows_the_in_process_answers(settings, conn, engine, bundled_model, sentiment_bank):
    prompt = "a tedious and joyless film"
    engine.set_adapter(None)  # both sides start from a cold cache
    here = await f3_round(settings, conn, Runtime(settings, conn, engine=engine), prompt)
    server = llama_server_process(llama_server(), bundled_model, [], slots=1, cache_ram=False, n_threads=THREADS)
    with server as url:
        remote_settings = replace(settings, engine_url=url, engine_prompt_cache=True)
        remote = Runtime(remote_settings, conn)
        there = await f3_round(remote_settings, conn, remote, prompt)
        remote.close()
    assert there == here and sorted(here) == ["base", "base+jaccard@2"] and all(here.values())


@pytest.mark.slow
@pytest.mark.parametrize(("slots", "prompt_cache"), [(3, False), (3, True), (1, True)])
def test_alternating_adapters_on_one_prefix_never_answer_from_another_adapters_cache(
    settings, conn, engine, bundled_model, adapters, slots, prompt_cache
):
    """Three settings on one long shared prefix, switching at almost every request. tunelab's
    default against a stock server (RAM prompt cache on): every request cold. With
    `engine_prompt_cache` against a server started with `--cache-ram 0`, with a slot per setting (3)
    and with all of them on one slot (1): cold when the slot's last request was another setting,
    warm when it was this one. KV computed under another adapter would give neither."""
    prefix = "You label film reviews. " + " ".join(f"Review {i}: a film with scenes, actors and a plot." for i in range(12))
    messages = [ChatMessage("system", prefix), ChatMessage("user", "Review: a moving, wonderful film. Label:")]
    order = [None, "rand-a", "rand-b", "rand-a", None, "rand-b", "rand-b"]
    local = Runtime(settings, conn, engine=engine)
    expected = {}
    for name in (None, *ADAPTERS):
        here = local.engine_for(name)
        here.set_adapter(here.lora_path, here.lora_scale)  # a cold cache, whatever ran before
        expected[name, "cold"] = here.chat(messages, greedy(12)).text()
        expected[name, "warm"] = here.chat(messages, greedy(12)).text()  # the same prompt again: the prefix reused
    assert len({expected[name, "cold"] for name in (None, *ADAPTERS)}) == 3  # a mix-up of settings would show

    slot_of: dict[str | None, int] = {}
    last_on_slot: dict[int, str | None] = {}
    want = []
    for name in order:  # tunelab's protocol: a slot per setting in order of first use, modulo the slots
        slot = slot_of.setdefault(name, len(slot_of) % slots)
        warm = prompt_cache and slot in last_on_slot and last_on_slot[slot] == name
        want.append((name, expected[name, "warm" if warm else "cold"]))
        last_on_slot[slot] = name
    server = llama_server_process(llama_server(), bundled_model, adapters, slots=slots, cache_ram=not prompt_cache, n_threads=THREADS)
    with server as url:
        remote = Runtime(replace(settings, engine_url=url, engine_prompt_cache=prompt_cache), conn)
        answers = [(name, remote.engine_for(name).chat(messages, greedy(12)).text()) for name in order]
        remote.close()
    assert answers == want
    if prompt_cache:
        assert any(expected[name, "warm"] != expected[name, "cold"] for name in ADAPTERS)  # so the warm answers show reuse
