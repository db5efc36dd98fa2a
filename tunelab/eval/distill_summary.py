"""How close a distilled student gets to its teacher and to the gold answers, from one comparison.

Imitation copies a teacher's style more readily than its knowledge (Gudibande et al. 2023), so
accuracy against the gold references alone can hide what distillation did: the agreement rate
with the teacher's own answers on the same held-out items says how well the student imitates,
and the paired difference against the teacher on the primary metric how much quality it lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.eval.metrics import agreement
from tunelab.eval.statistics import Interval, wilson_interval

if TYPE_CHECKING:
    from tunelab.eval.summary import Summary


@dataclass(frozen=True)
class StudentTeacher:
    student: str
    teacher: str
    n: int
    agreement: Interval
    """Share of items where the student gives the teacher's answer (95% Wilson interval)."""
    student_metric: Interval
    teacher_metric: Interval
    gap: Interval
    """Student minus teacher on the primary metric, paired over the items (95% CI)."""
    gap_p_value: float
    gap_verdict: str


@dataclass(frozen=True)
class DistillSummary:
    metric: str
    pairs: list[StudentTeacher]


def distill_summary(summary: Summary, students: Sequence[tuple[str, str]], labels: Sequence[str] = ()) -> DistillSummary:
    """Agreement and the gap to the teacher for each (student arm, teacher arm) in the comparison."""
    metric = summary.primary_metric
    pairs = []
    for student, teacher in students:
        agreed = sum(agreement(item["outputs"][student]["output"], item["outputs"][teacher]["output"], labels) for item in summary.items)
        test = summary.pair(student, teacher).test
        pairs.append(
            StudentTeacher(
                student,
                teacher,
                len(summary.items),
                wilson_interval(agreed, len(summary.items)),
                summary.arm(student).metrics[metric],
                summary.arm(teacher).metrics[metric],
                test.difference,
                test.p_value,
                test.verdict,
            )
        )
    return DistillSummary(metric, pairs)
