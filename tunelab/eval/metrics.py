"""Scoring one reply against its reference: normalised accuracy, chrF and ROUGE-L, all in [0, 1].

Scores are per item (sentence-level chrF, not corpus chrF) because the confidence intervals and
paired tests in `statistics.py` resample items: a corpus score has no per-item values to resample.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # both load lazily: rouge-score pulls in nltk (seconds), which every CLI start would pay
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import CHRF

ACCURACY, CHRF_METRIC, ROUGE_L = "accuracy", "chrf", "rouge_l"
METRICS = (ACCURACY, CHRF_METRIC, ROUGE_L)

# CJK and kana characters are words on their own; other scripts split on non-word characters.
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and symbols, collapse whitespace: "  Positive!" -> "positive"."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)
    return " ".join(kept.split())


def first_line(text: str) -> str:
    """The first non-empty line: small models often add an explanation after the answer."""
    return next((line for line in text.strip().splitlines() if line.strip()), "")


def match_label(prediction: str, labels: Sequence[str]) -> str | None:
    """Map a free-form reply onto the bank's label set, or None when it names none or several.

    Tried in order: the normalised first line equals a label; the first line contains exactly
    one label as whole words; the whole reply does. "Sentiment: positive." -> "positive", but
    "positive or negative" -> None (a hedge is not an answer).
    """
    by_norm = {normalize(label): label for label in labels if normalize(label)}
    line = normalize(first_line(prediction))
    if line in by_norm:
        return by_norm[line]
    for text in (line, normalize(prediction)):
        padded = f" {text} "
        found = [label for norm, label in by_norm.items() if f" {norm} " in padded]
        if len(found) == 1:
            return found[0]
        if found:
            return None
    return None


def accuracy(prediction: str, reference: str, labels: Sequence[str] = ()) -> float:
    """1.0 when the reply means the reference: via the label set if given, else normalised first lines."""
    if labels:
        expected = match_label(reference, labels)
        return float(expected is not None and match_label(prediction, labels) == expected)
    return float(normalize(first_line(prediction)) == normalize(first_line(reference)))


def agreement(a: str, b: str, labels: Sequence[str] = ()) -> float:
    """1.0 when two replies give the same answer: the same label, or (no label in either) the same
    normalised first line. How a distilled student is measured against its teacher."""
    if labels and (label := match_label(a, labels)) is not None:
        return float(label == match_label(b, labels))
    return float(normalize(first_line(a)) == normalize(first_line(b)))


@lru_cache(maxsize=1)
def _chrf() -> CHRF:
    from sacrebleu.metrics import CHRF

    return CHRF()


@lru_cache(maxsize=1)
def _rouge() -> RougeScorer:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=_Tokenizer())


class _Tokenizer:
    """rouge-score's default tokenizer drops every non-ASCII character; this one keeps all scripts."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def chrf(prediction: str, reference: str) -> float:
    """Sentence chrF (sacrebleu's defaults: character 6-grams, beta 2), scaled to [0, 1]."""
    return _chrf().sentence_score(prediction, [reference]).score / 100.0


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of words)."""
    return _rouge().score(reference, prediction)["rougeL"].fmeasure


def score(prediction: str, reference: str, labels: Sequence[str] = ()) -> dict[str, float]:
    """Every metric for one reply; the caller picks the primary one with `primary_metric`."""
    return {
        ACCURACY: accuracy(prediction, reference, labels),
        CHRF_METRIC: chrf(prediction, reference),
        ROUGE_L: rouge_l(prediction, reference),
    }


def primary_metric(labels: Sequence[str], references: Sequence[str] = ()) -> str:
    """Accuracy for label-like tasks (a label set, or one-line references that repeat), chrF for free text."""
    if labels:
        return ACCURACY
    distinct = {normalize(r) for r in references}
    short = all(len(normalize(r).split()) <= 3 for r in references)
    if references and short and len(distinct) <= max(1, len(references) // 2):
        return ACCURACY
    return CHRF_METRIC
