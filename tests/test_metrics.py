"""Metrics against values computed by hand."""

from __future__ import annotations

import pytest

from tunelab.eval import metrics

LABELS = ["positive", "negative"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("  Positive!\n", "positive"), ("Hello,   World...", "hello world"), ("ÉTÉ—chaud", "été chaud"), ("", "")],
)
def test_normalize_drops_case_punctuation_and_extra_space(text: str, expected: str) -> None:
    assert metrics.normalize(text) == expected


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("positive", "positive"),
        ("Sentiment: Positive.", "positive"),
        ("NEGATIVE\nBecause the plot drags.", "negative"),
        ("\n\nThe review is negative, the acting is bad", "negative"),
        ("positive or negative", None),  # a hedge is not an answer
        ("I cannot tell.", None),
        ("not positive", "positive"),  # word matching, not understanding: documented limit
    ],
)
def test_match_label_maps_free_replies_onto_the_label_set(reply: str, label: str | None) -> None:
    assert metrics.match_label(reply, LABELS) == label


def test_accuracy_with_and_without_a_label_set() -> None:
    assert metrics.accuracy("Positive!", "positive", LABELS) == 1.0
    assert metrics.accuracy("negative", "positive", LABELS) == 0.0
    assert metrics.accuracy("positive or negative", "positive", LABELS) == 0.0
    # no label set: the normalised first lines must be equal
    assert metrics.accuracy("Paris.\nIt is the capital.", "paris") == 1.0
    assert metrics.accuracy("Lyon", "Paris") == 0.0


def test_chrf_by_hand() -> None:
    # "ab" vs "abc": 1-grams P=2/2 R=2/3, 2-grams P=1/1 R=1/2, higher orders absent.
    # mean P=1, mean R=7/12; F_beta=2 = 5*P*R / (4P + R) = 7/11.
    assert metrics.chrf("ab", "abc") == pytest.approx(7 / 11)
    assert metrics.chrf("the same", "the same") == pytest.approx(1.0)
    assert metrics.chrf("xyz", "abc") == 0.0


def test_rouge_l_by_hand_including_non_latin_scripts() -> None:
    # LCS("the cat sat on mat", "the cat on the mat") = the cat on mat: P = R = 4/5.
    assert metrics.rouge_l("the cat sat on mat", "the cat on the mat") == pytest.approx(0.8)
    # one character per CJK token: LCS 5, P = 5/6, R = 5/5 -> F = 10/11
    assert metrics.rouge_l("猫坐在垫子上", "猫在垫子上") == pytest.approx(10 / 11)
    assert metrics.rouge_l("", "anything") == 0.0


def test_score_returns_every_metric_in_unit_range() -> None:
    scores = metrics.score("Positive, clearly", "positive", LABELS)
    assert set(scores) == set(metrics.METRICS)
    assert scores["accuracy"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_primary_metric() -> None:
    assert metrics.primary_metric(LABELS) == "accuracy"
    assert metrics.primary_metric([], ["yes", "no", "yes", "no"]) == "accuracy"
    assert metrics.primary_metric([], ["A long free-text answer about cats.", "Another different answer here."]) == "chrf"
