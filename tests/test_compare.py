"""Comparison: arms, resumable storage, summary + report files, arena votes; end to end on the bundled model."""

from __future__ import annotations

import json
import random
import re

import pytest
from cli_support import invoke

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.reply import Reply, ReplyStats
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm, parse_selectors, standard_grid
from tunelab.eval.report import REPORT_JSON, REPORT_MD, REPORT_PNG, write_report
from tunelab.eval.summary import summarize
from tunelab.runtime import arena, arm_runner
from tunelab.runtime.arm_runner import ArmReply
from tunelab.stores.comparisons import ComparisonItem, ComparisonStore, ItemResult
from tunelab.stores.provenance import Provenance


# -- arms ------------------------------------------------------------------------------------------
def test_standard_grid_is_base_and_adapters_times_zero_shot_and_selectors() -> None:
    arms = standard_grid(parse_selectors("jaccard, embedding"), 4, ["sst"])
    assert [a.name for a in arms] == [
        "base",
        "base+jaccard@4",
        "base+embedding@4",
        "lora:sst",
        "lora:sst+jaccard@4",
        "lora:sst+embedding@4",
    ]
    assert all(Arm.parse(a.name) == a for a in arms)
    assert [a.name for a in standard_grid([], 4)] == ["base"]


@pytest.mark.parametrize("bad", ["gpt4", "base+bm25@4", "base+jaccard@0", "base+jaccard@x", "lora:+random"])
def test_bad_arm_names_are_one_line_errors(bad: str) -> None:
    with pytest.raises(TunelabError):
        Arm.parse(bad)


def test_parse_selectors_rejects_unknown_kinds() -> None:
    assert parse_selectors("random,random, mmr") == ["random", "mmr"]
    assert parse_selectors("") == []
    with pytest.raises(TunelabError, match="bm25"):
        parse_selectors("jaccard,bm25")


# -- storage, summary and report on constructed results --------------------------------------------
def _fill(conn, accuracies: dict[str, list[int]], fingerprint: str = "fp") -> int:
    store = ComparisonStore(conn)
    n = len(next(iter(accuracies.values())))
    items = [ComparisonItem(i, str(100 + i), f"review {i}", "positive" if i % 2 else "negative") for i in range(n)]
    comparison = store.open("demo", "key-1", {"test_source": "constructed", "model": "m.gguf", "sampler": {}}, items, list(accuracies))
    for arm, hits in accuracies.items():
        for item, hit in zip(items, hits):
            output = item.reference if hit else "unsure"
            store.add_result(
                comparison.id,
                fingerprint,
                ItemResult(
                    arm,
                    item.position,
                    output,
                    {"accuracy": float(hit), "chrf": 0.5 * hit, "rouge_l": 1.0 * hit},
                    prompt_tokens=40 if "@" not in arm else 240,
                    completion_tokens=2,
                    ttft_ms=5.0 if arm.endswith("~cached") else 20.0,
                    total_ms=50.0,
                    decode_tps=60.0,
                    finish_reason="stop",
                    provenance={"selection_ms": 5.0},
                ),
            )
    return comparison.id


def test_the_verdict_puts_a_cached_arm_beside_its_exact_twin(conn) -> None:
    accuracies = {"base": [0] * 10 + [1] * 10, "base+jaccard@2": [1] * 20, "base+jaccard@2~cached": [1] * 18 + [0] * 2}
    comparison_id = _fill(conn, accuracies)
    store = ComparisonStore(conn)
    summary = summarize(store.get(comparison_id), store.items(comparison_id), store.results(comparison_id), "accuracy")
    line = next(v for v in summary.verdict if v.startswith("Example cache"))
    assert "**base+jaccard@2~cached** vs **base+jaccard@2**: -10.0 points (95% CI" in line
    assert "TTFT 20 ms exact vs 5 ms cached (4.00x faster)" in line


def test_finished_positions_survive_reopen_and_stale_fingerprints_are_dropped(conn) -> None:
    comparison_id = _fill(conn, {"base": [1, 0, 1]})
    store = ComparisonStore(conn)
    again = store.open("demo", "key-1", {}, [], ["base", "base+jaccard@4"])
    assert again.id == comparison_id and again.arms == ["base", "base+jaccard@4"]
    assert store.finished(comparison_id, "base", "fp") == {0, 1, 2}
    assert store.finished(comparison_id, "base", "retrained-adapter") == set()
    assert store.results(comparison_id) == []


def test_summary_and_report_files(conn, settings) -> None:
    accuracies = {
        "base": [0] * 16 + [1] * 4,
        "base+jaccard@4": [1] * 16 + [1] * 4,  # 16 more right than base: significant
        "lora:x": [1] * 15 + [0] + [1] * 4,  # one fewer than jaccard: not significant
    }
    comparison_id = _fill(conn, accuracies)
    store = ComparisonStore(conn)
    comparison = store.get(comparison_id)
    summary = summarize(comparison, store.items(comparison_id), store.results(comparison_id), "accuracy")
    assert summary.arm("base+jaccard@4").metrics["accuracy"].value == 1.0
    assert summary.arm("base").metrics["accuracy"].value == pytest.approx(0.2)
    assert summary.arm("base").wall_s == pytest.approx(20 * 0.055)
    assert summary.pair("base+jaccard@4", "base").test.significant
    top = summary.pair("base+jaccard@4", "lora:x").test
    assert top.discordant == (1, 0) and top.p_value == 1.0 and not top.significant
    assert "**base+jaccard@4**" in summary.verdict[0]
    assert any("not significant" in line for line in summary.verdict)
    assert any("cannot be told apart" in line for line in summary.verdict)

    path = write_report(settings, summary)
    assert path == settings.home / "reports" / str(comparison_id)
    report = json.loads((path / REPORT_JSON).read_text())
    assert len(report["items"]) == 20
    assert set(report["items"][0]["outputs"]) == set(accuracies)
    significant = {frozenset((p["a"], p["b"])): p["test"]["significant"] for p in report["pairs"]}
    assert significant[frozenset(("base", "base+jaccard@4"))] is True  # the summary's verdicts, as written
    assert significant[frozenset(("base+jaccard@4", "lora:x"))] is False
    markdown = (path / REPORT_MD).read_text()
    assert "| base+jaccard@4 | 100.0% [100.0%, 100.0%]" in markdown
    assert (path / REPORT_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_compare_help_shows_its_greedy_defaults_not_chats() -> None:
    """The sampler flags are shared with `chat`, which samples; compare's help must show what compare uses."""
    shown = " ".join(invoke("compare", "--help").stdout.split())
    greedy = arm_runner.greedy(max_tokens=16)
    for name in ("temperature", "top_p", "top_k", "repeat_penalty", "seed"):
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"{flag} [A-Z]+ \(default {re.escape(str(getattr(greedy, name)))}\)", shown), (flag, shown)
    assert (greedy.temperature, greedy.top_k) == (0.0, 1)
    assert "--max-tokens INTEGER (default 16 for a bank with labels, 256 otherwise)" in shown


def test_summary_refuses_an_unfinished_comparison(conn) -> None:
    comparison_id = _fill(conn, {"base": [1, 0]})
    store = ComparisonStore(conn)
    store.open("demo", "key-1", {}, [], ["base", "base+mmr@2"])
    with pytest.raises(TunelabError, match="resume"):
        summarize(store.get(comparison_id), store.items(comparison_id), store.results(comparison_id), "accuracy")


# -- arena votes -----------------------------------------------------------------------------------
def _reply(text: str) -> Reply:
    reply = Reply(iter([text]), ReplyStats(prompt_tokens=5, completion_tokens=1), [ChatMessage("user", "q")])
    reply.text()
    return reply


def test_blind_round_hides_names_until_the_vote_and_stores_a_preference(conn) -> None:
    arms = [Arm(), Arm(None, "jaccard", 2), Arm(None, "random", 2)]
    round_ = arena.new_round("Is this good?", arms, blind=True, rng=random.Random(1), bank="demo")
    assert len(round_.arms) == 2 and len(set(round_.arms)) == 2
    assert [round_.title(0), round_.title(1)] == ["Model A", "Model B"]
    with pytest.raises(TunelabError):
        arena.record_vote(conn, round_, "left")  # replies not finished
    for column, arm in enumerate(round_.arms):
        round_.replies[column] = ArmReply(arm, _reply(f"reply {column}"), Provenance("m.gguf", "abc", arm=arm.name))
    vote = arena.record_vote(conn, round_, "right")
    assert vote.choice == "b" and vote.b_reply == "reply 1" and vote.b_arm == round_.arms[1].name
    assert vote.a_snapshot["round"]["blind"] is True
    assert round_.title(0) == round_.arms[0].name  # revealed
    with pytest.raises(TunelabError):
        arena.record_vote(conn, round_, "left")  # only once
    (rate,) = arena.win_rates(conn)
    winner = round_.arms[1].name
    assert (rate.a == winner and rate.wins == 1) or (rate.b == winner and rate.losses == 1)


def test_named_round_takes_two_to_four_arms() -> None:
    arms = [Arm(None, k, 1) for k in ("random", "jaccard", "embedding", "mmr")] + [Arm()]
    with pytest.raises(TunelabError, match="2 to 4"):
        arena.new_round("q", arms, blind=False, rng=random.Random(0))
    with pytest.raises(TunelabError, match="empty"):
        arena.new_round("  ", arms[:2], blind=False, rng=random.Random(0))
    assert arena.new_round("q", arms[:3], blind=False, rng=random.Random(0)).arms == arms[:3]
