"""Reference rows and error analysis for label tasks: is an arm any better than not reading the input?

An accuracy means little without the accuracy of answering the test split's most frequent
label every time (a 12-step LoRA that says "positive" 89 times in 100 scores about the share
of positives), so every label-task report carries: the test split's label distribution, the
majority-label and uniform-chance rates, a confusion matrix per arm, the share of replies
that are no label at all, macro-F1 (which the majority answer cannot inflate), and an exact
one-sided binomial test of each arm's correct answers against the majority rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunelab.eval.metrics import first_line, match_label
from tunelab.eval.statistics import ALPHA, binomial_greater

NOT_A_LABEL = "(not a label)"
BASELINE_TEST = (
    "one-sided exact binomial test of each arm's correct answers against the majority rate p0 "
    f"(H1: accuracy > p0, alpha {ALPHA:.2f}); p0 is the majority share of these same test items"
)


@dataclass
class ArmErrors:
    arm: str
    correct: int
    n: int
    confusion: dict[str, dict[str, int]]
    """Reference label -> predicted label (or NOT_A_LABEL) -> count."""
    not_a_label: float
    """Share of replies that name no label (or several)."""
    macro_f1: float
    p_above_majority: float
    """One-sided exact binomial p-value of `correct` out of `n` against the majority rate."""

    @property
    def above_majority(self) -> bool:
        return self.p_above_majority < ALPHA


@dataclass
class LabelBaselines:
    labels: list[str]
    distribution: dict[str, int]
    """Test items per reference label (in `labels` order, then any reference outside the label set)."""
    majority_label: str
    majority_rate: float
    uniform_rate: float
    majority_macro_f1: float
    """Macro-F1 of always answering the majority label: the floor macro-F1 is read against."""
    arms: list[ArmErrors]
    test: str = BASELINE_TEST

    @property
    def balanced(self) -> bool:
        """Every label equally frequent in the test split: accuracy and macro-F1 then tell the same story."""
        counts = [self.distribution.get(label, 0) for label in self.labels]
        return len(set(counts)) <= 1

    def arm(self, name: str) -> ArmErrors:
        return next(a for a in self.arms if a.arm == name)


def task_labels(labels: Sequence[str], references: Sequence[str]) -> list[str]:
    """The bank's label set, or - for a bank without one whose primary metric is accuracy - the
    distinct one-line references in order of first appearance."""
    if labels:
        return list(labels)
    return list(dict.fromkeys(first_line(r).strip() for r in references if first_line(r).strip()))


def macro_f1(pairs: Sequence[tuple[str, str]], labels: Sequence[str]) -> float:
    """Mean per-label F1 over the labels that occur as reference or prediction (non-labels are misses)."""
    present = [label for label in labels if any(label in pair for pair in pairs)]
    scores = []
    for label in present:
        tp = sum(ref == label and pred == label for ref, pred in pairs)
        fp = sum(ref != label and pred == label for ref, pred in pairs)
        fn = sum(ref == label and pred != label for ref, pred in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def label_baselines(items: Sequence[dict[str, Any]], arms: Sequence[str], labels: Sequence[str]) -> LabelBaselines:
    """Baselines and per-arm errors from a summary's item rows (`reference`, `outputs[arm]`).

    Correct answers are the stored accuracy scores, so the binomial test counts exactly what the
    accuracy column shows.
    """
    references = [match_label(item["reference"], labels) or first_line(item["reference"]).strip() for item in items]
    counts = Counter(references)
    order = [label for label in labels] + sorted(set(counts) - set(labels))
    distribution = {label: counts.get(label, 0) for label in order}
    majority_label = max(order, key=lambda label: (distribution[label], -order.index(label)))
    n = len(items)
    majority_rate = distribution[majority_label] / n
    errors = []
    for arm in arms:
        predicted = [match_label(item["outputs"][arm]["output"], labels) or NOT_A_LABEL for item in items]
        confusion = {ref: {pred: 0 for pred in [*order, NOT_A_LABEL]} for ref in order}
        for ref, pred in zip(references, predicted):
            confusion[ref][pred] += 1
        correct = round(sum(item["outputs"][arm]["scores"]["accuracy"] for item in items))
        errors.append(
            ArmErrors(
                arm=arm,
                correct=correct,
                n=n,
                confusion=confusion,
                not_a_label=predicted.count(NOT_A_LABEL) / n,
                macro_f1=macro_f1(list(zip(references, predicted)), order),
                p_above_majority=binomial_greater(correct, n, majority_rate),
            )
        )
    majority_f1 = macro_f1([(ref, majority_label) for ref in references], order)
    return LabelBaselines(list(labels), distribution, majority_label, majority_rate, 1 / max(1, len(labels)), majority_f1, errors)
