"""The example cache (issue 27): examples' KV computed once and placed into each prompt, on the
real bundled model; with every example token recomputed it must give the exact prompt's reply."""

from __future__ import annotations

from dataclasses import replace

import pytest
from compare_support import sentiment_bank  # noqa: F401

from tunelab.engine.example_cache import ExampleCache, Weights
from tunelab.engine.prompt_segments import segment
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.icl.prompt import task_messages
from tunelab.icl.selectors import Selected
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.compare import run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import bank_test_set
from tunelab.stores.comparisons import ComparisonStore
from tunelab.stores.demo_banks import qa
from tunelab.stores.provenance import IclUse

GREEDY = SamplerParams(temperature=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, max_tokens=24, seed=0)
ALL = 10**6
"""A recompute count above any example's length: every example token decoded in place."""


def prompts(n: int, picks: tuple[int, ...] = (3, 7)) -> list:
    """Free-text questions with the same examples in varying order (so cached ones are moved)."""
    bank = qa()
    rows = bank.rows
    out = []
    for i in range(n):
        chosen = picks if i % 2 == 0 else tuple(reversed(picks))
        examples = [Selected(j, rows[j].input, rows[j].output, 0.0) for j in chosen]
        out.append(task_messages(bank.instruction, rows[200 + i].input, examples))
    return out


def test_segments_join_to_the_prompt_and_an_odd_layout_has_none(engine) -> None:
    (messages,) = prompts(1)
    segments = segment(engine.template, messages, 2)
    assert segments is not None and segments.tokens == engine.template.tokens(messages)
    assert len(segments.examples) == 2 and segments.prefix and not segments.head
    assert segment(engine.template, messages, 3) is None  # the system turn is no example pair


def test_every_token_recomputed_gives_the_exact_reply_and_examples_are_computed_once(engine) -> None:
    engine.set_adapter(None)  # a fresh cache
    convs = prompts(3)
    for messages in convs:
        exact = engine.chat(messages, GREEDY)
        reply, use = engine.chat_cached(messages, 2, ALL, GREEDY)
        assert (reply.text(), reply.stats.prompt_tokens) == (exact.text(), exact.stats.prompt_tokens)
        assert use.cached and use.recomputed_tokens > 0 and use.cached_tokens > 0  # the first example, exact as cached
    # recompute 0: the cached KV alone; the first example sits where it was computed, so it is exact too
    one = task_messages(qa().instruction, qa().rows[210].input, [Selected(3, qa().rows[3].input, qa().rows[3].output, 0.0)])
    reply, use = engine.chat_cached(one, 1, 0, GREEDY)
    assert reply.text() == engine.chat(one, GREEDY).text()
    assert use.recomputed_tokens == 0 and use.cached_tokens > 0
    again, use = engine.chat_cached(prompts(2)[1], 2, 4, GREEDY)
    assert again.text() and use.computed_examples == 0 and use.recomputed_tokens == 4  # only the second example: 4 tokens


def test_set_adapter_drops_the_cache_and_keys_carry_the_weights(engine) -> None:
    (messages,) = prompts(1, picks=(11, 13))
    _, use = engine.chat_cached(messages, 2, 2, GREEDY)
    assert use.computed_examples == 2 and len(engine.example_cache) >= 2
    assert {k.weights for k in engine.example_cache} == {Weights(engine.model_path, None, engine.lora_scale)}
    engine.set_adapter(None)  # any adapter change: the KV was computed with the previous weights
    assert len(engine.example_cache) == 0 and engine._examples is None
    _, use = engine.chat_cached(messages, 2, 2, GREEDY)
    assert use.computed_examples == 2  # computed again under the new weights, not reused
    reply, use = engine.chat_cached(messages, 2, ALL, GREEDY)
    assert reply.text() == engine.chat(messages, GREEDY).text()


def test_cache_drops_least_recently_used_bytes() -> None:
    cache = ExampleCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"
    cache.put("c", b"1234")  # 12 bytes: b, the least recently used, goes
    assert list(cache) == ["a", "c"] and cache.nbytes == 8


def test_cached_arm_names_round_trip_and_bad_ones_are_refused() -> None:
    arm = Arm.parse("lora:sst+embedding@4~cached")
    assert arm == Arm("sst", "embedding", 4, cached=True) and Arm.parse(arm.name) == arm
    assert Arm.parse("base+jaccard~cached") == Arm(None, "jaccard", 4, cached=True)
    with pytest.raises(TunelabError, match="~cached answers at once"):
        Arm.parse("base+jaccard@2~cached+plan")
    with pytest.raises(TunelabError, match="needs examples"):
        Arm(cached=True)


def test_old_icl_records_read_as_not_cached() -> None:
    old = IclUse.from_dict({"bank": "b", "selector": "jaccard", "k": 2, "examples": []})
    assert not old.cached and old.recomputed_tokens == 0 and old.cached_tokens == 0
    new = replace(old, cached=True, cached_tokens=40, recomputed_tokens=16)
    assert IclUse.from_dict(new.__dict__ | {"examples": []}) == new


def test_a_cached_arm_runs_in_a_compare_and_its_provenance_says_so(settings, conn, engine, sentiment_bank) -> None:
    runner = ArmRunner(Runtime(settings, conn, engine=engine), sentiment_bank)
    test_set = bank_test_set(conn, sentiment_bank, limit=2)
    cached, exact = Arm(None, "jaccard", 2, cached=True), Arm(None, "jaccard", 2)
    comparison = run_comparison(runner, test_set, [exact, cached], greedy(4))
    results = ComparisonStore(conn).results(comparison.id)
    by_arm = {(r.arm, r.position): r for r in results}
    assert len(results) == 4
    for item in test_set.items:
        icl = by_arm[(cached.name, item.position)].provenance["icl"]
        assert (
            icl["cached"] and icl["recomputed_tokens"] == settings.icl_cache_recompute
        )  # the first example sits where it was computed and icl["cached_tokens"] > 0
        assert not by_arm[(exact.name, item.position)].provenance["icl"]["cached"]
        assert by_arm[(cached.name, item.position)].examples == by_arm[(exact.name, item.position)].examples


def test_a_remote_engine_refuses_a_cached_arm_in_one_line(settings, conn, sentiment_bank) -> None:
    runner = ArmRunner(Runtime(replace(settings, engine_url="http://127.0.0.1:9"), conn), sentiment_bank)
    test_set = bank_test_set(conn, sentiment_bank, limit=1)
    with pytest.raises(TunelabError) as refused:
        run_comparison(runner, test_set, [Arm(None, "jaccard", 2, cached=True)], greedy(4))
    message = str(refused.value)
    assert "example cache needs llama.cpp in this process" in message and "\n" not in message
    assert ComparisonStore(conn).list() == []


def test_chat_with_icl_cache_from_the_cli_says_what_the_cache_served(settings, sentiment_bank) -> None:
    from click.testing import CliRunner

    from tunelab.cli import cli

    args = ["chat", "--bank", sentiment_bank.name, "--selector", "jaccard", "--k", "2", "--temperature", "0", "--max-tokens", "4"]
    result = CliRunner().invoke(cli, [*args, "--icl-cache", "A dull, endless film."], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "from the example cache" in result.stderr and f"{settings.icl_cache_recompute} recomputed" in result.stderr
    refused = CliRunner().invoke(cli, ["chat", "--icl-cache", "Hi"])
    assert refused.exit_code == 1 and "--icl-cache need --bank" in refused.output
