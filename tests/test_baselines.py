"""Label-task baselines on constructed comparisons: the majority label, confusion matrices, non-labels,
macro-F1 and a verdict that never crowns an arm that is not above always answering the majority."""

from __future__ import annotations

import json
import math

import pytest

from tunelab.eval.baselines import NOT_A_LABEL
from tunelab.eval.metrics import score
from tunelab.eval.report import REPORT_JSON, REPORT_MD, write_report
from tunelab.eval.statistics import binomial_greater
from tunelab.eval.summary import summarize
from tunelab.stores.comparisons import ComparisonItem, ComparisonStore, ItemResult

LABELS = ["negative", "positive"]


def _comparison(conn, replies: dict[str, list[str]], references: list[str]):
    """A comparison whose arms gave `replies`, scored by the real metrics, summarised for real."""
    store = ComparisonStore(conn)
    items = [ComparisonItem(i, str(i), f"review {i}", ref) for i, ref in enumerate(references)]
    comparison = store.open("demo", "key", {"labels": LABELS, "test_source": "constructed", "sampler": {}}, items, list(replies))
    for arm, outputs in replies.items():
        for item, output in zip(items, outputs):
            store.add_result(
                comparison.id,
                "fp",
                ItemResult(arm, item.position, output, score(output, item.reference, LABELS), 40, 2, 20.0, 50.0, 60.0, "stop"),
            )
    return summarize(store.get(comparison.id), items, store.results(comparison.id), "accuracy")


def _hand_p(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_majority_arm_is_flagged_and_a_real_winner_still_wins(conn, settings) -> None:
    references = ["positive"] * 30 + ["negative"] * 20  # 60 % positive
    always_majority = ["Positive."] * 50
    good = ["positive"] * 30 + ["negative"] * 10 + ["positive"] * 10  # 40 / 50 right
    hedging = ["positive or negative?"] * 20 + ["positive"] * 10 + ["negative"] * 20  # 20 non-labels, 30 right
    summary = _comparison(conn, {"lora:x": always_majority, "base+jaccard@4": good, "base": hedging}, references)
    b = summary.baselines
    assert b is not None and b.distribution == {"negative": 20, "positive": 30}
    assert b.majority_label == "positive" and b.majority_rate == pytest.approx(0.6) and b.uniform_rate == 0.5
    assert not b.balanced

    lora = b.arm("lora:x")
    assert lora.confusion == {
        "negative": {"negative": 0, "positive": 20, NOT_A_LABEL: 0},
        "positive": {"negative": 0, "positive": 30, NOT_A_LABEL: 0},
    }
    assert lora.correct == 30 and lora.not_a_label == 0.0
    assert lora.macro_f1 == pytest.approx((2 * 30 / (2 * 30 + 20) + 0.0) / 2)
    assert lora.p_above_majority == pytest.approx(_hand_p(30, 50, 0.6)) and not lora.above_majority
    assert b.majority_macro_f1 == pytest.approx(lora.macro_f1)

    jaccard = b.arm("base+jaccard@4")
    assert jaccard.correct == 40 and jaccard.p_above_majority == pytest.approx(_hand_p(40, 50, 0.6)) and jaccard.above_majority
    assert b.arm("base").not_a_label == pytest.approx(0.4)
    assert b.arm("base").confusion["positive"][NOT_A_LABEL] == 20

    assert "**base+jaccard@4**" in summary.verdict[0] and "significantly above always answering **positive**" in summary.verdict[0]
    flagged = next(line for line in summary.verdict if line.startswith("Not significantly above"))
    assert "lora:x 60.0%" in flagged and "base 60.0%" in flagged and "base+jaccard@4" not in flagged
    assert any("one-sided exact binomial" in line for line in summary.verdict)

    path = write_report(settings, summary)
    markdown = (path / REPORT_MD).read_text()
    assert "| *majority: always `positive`* | 60.0% |" in markdown and "| *uniform chance (1/2)* | 50.0% |" in markdown
    assert "macro-F1" in markdown and "| lora:x | 60.0% | 37.5 | 0.0% |" in markdown and "**not above**" in markdown
    assert "| positive | 0 | 30 | 0 |" in markdown  # lora:x's confusion row
    report = json.loads((path / REPORT_JSON).read_text())
    assert report["baselines"]["majority_label"] == "positive"
    assert {a["arm"]: a["above_majority"] for a in report["baselines"]["arms"]} == {"lora:x": False, "base+jaccard@4": True, "base": False}


def test_no_arm_above_the_majority_crowns_nobody(conn) -> None:
    references = ["positive"] * 28 + ["negative"] * 22  # 56 %
    arms = {
        "base": ["positive"] * 14 + ["negative"] * 14 + ["positive"] * 10 + ["negative"] * 12,  # 26 right: 52 %
        "base+random@4": ["negative"] * 28 + ["negative"] * 22,  # 22 right: 44 %
    }
    summary = _comparison(conn, arms, references)
    assert summary.arm("base").metrics["accuracy"].value == pytest.approx(0.52)
    assert not any(line.startswith("Best arm") for line in summary.verdict)
    assert summary.verdict[0].startswith("No arm is significantly above always answering **positive** (56.0%")
    assert "no arm wins" in summary.verdict[0]
    flagged = summary.verdict[1]
    assert "base+random@4 44.0% (p=" in flagged and ", below it)" in flagged


def test_balanced_labels_and_the_binomial_tail() -> None:
    assert binomial_greater(0, 10, 0.5) == 1.0
    assert binomial_greater(10, 10, 0.5) == pytest.approx(2**-10)
    assert binomial_greater(1200, 2000, 0.5) < 1e-15  # no float overflow at large n
