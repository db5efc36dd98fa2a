"""A learning curve from a finished comparison: quality against the number of examples, for ICL
(k examples in the prompt, per selector) and for LoRA (n train examples, several training seeds),
the crossover, and what each costs on this machine.

One LoRA point pools its seeds: its value is the mean over seeds, its 95 % interval a bootstrap
over items of the per-item seed mean, and the seeds' own values (mean ± sd, min-max) show how
much the verdict depends on the training seed (few-shot fine-tuning varies a lot across seeds:
Mosbach et al. 2023). The crossover is the smallest n whose seed-mean is significantly above the
best ICL arm in a paired bootstrap on the same items, and "none within the data" otherwise.
Break-even: training time divided by the TTFT each query saves against that ICL arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean, pstdev

import numpy as np

from tunelab.eval.statistics import Interval, PairedTest, bootstrap_ci, paired_bootstrap
from tunelab.eval.summary import Summary, fmt_difference, fmt_metric

LORA = "lora"
ZERO_SHOT = "zero-shot"
"""The k = 0 point: the base model without examples, the start of every selector's ICL line."""


@dataclass(frozen=True)
class CurveArm:
    """Where one arm of the comparison sits on the curve."""

    arm: str
    family: str
    """The ICL selector ("jaccard", "random", ...), ZERO_SHOT for k = 0, or LORA."""
    x: int
    """Examples: k in the prompt (ICL) or n train examples (LoRA)."""
    seed: int | None = None
    train_seconds: float | None = None
    train_tokens: float | None = None
    """Non-padding tokens trained (the run's mean tokens/s x its training seconds)."""


@dataclass
class CurvePoint:
    family: str
    x: int
    arms: list[str]
    value: Interval
    seed_values: list[float] = field(default_factory=list)
    """LoRA: each training seed's metric; ICL: empty (one deterministic arm)."""
    prompt_tokens: float = 0.0
    ttft_ms: float | None = None
    train_seconds: float | None = None
    train_tokens: float | None = None

    @property
    def seed_sd(self) -> float | None:
        return pstdev(self.seed_values) if len(self.seed_values) > 1 else None


@dataclass
class BreakEven:
    lora_x: int
    versus: str
    ttft_saved_ms: float | None
    prompt_tokens_saved: float
    queries: float | None
    """Queries after which the training time is repaid; None when a query saves nothing."""


@dataclass
class CurveSummary:
    metric: str
    points: list[CurvePoint]
    best_icl: str | None
    crossover: int | None
    crossover_test: PairedTest | None
    ms_per_prompt_token: float | None
    """Least-squares slope of TTFT on prompt tokens over every base-model reply: this machine's prompt cost."""
    break_even: list[BreakEven]
    lines: list[str]

    def family(self, name: str) -> list[CurvePoint]:
        return [p for p in self.points if p.family == name]


def _item_scores(summary: Summary, arm: str) -> list[float]:
    return [item["outputs"][arm]["scores"][summary.primary_metric] for item in summary.items]


def _point(summary: Summary, family: str, x: int, arms: Sequence[CurveArm], seed: int) -> CurvePoint:
    names = [a.arm for a in arms]
    per_item = np.mean([_item_scores(summary, n) for n in names], axis=0)
    ttfts = [summary.arm(n).mean_ttft_ms for n in names]
    trained = [a.train_seconds for a in arms if a.train_seconds is not None]
    tokens = [a.train_tokens for a in arms if a.train_tokens is not None]
    return CurvePoint(
        family,
        x,
        names,
        bootstrap_ci(list(per_item), seed=seed),
        [summary.arm(n).metrics[summary.primary_metric].value for n in names] if family == LORA else [],
        fmean(summary.arm(n).mean_prompt_tokens for n in names),
        fmean(t for t in ttfts if t is not None) if any(t is not None for t in ttfts) else None,
        fmean(trained) if trained else None,
        fmean(tokens) if tokens else None,
    )


def prompt_cost(summary: Summary, arms: Sequence[CurveArm]) -> float | None:
    """ms of TTFT per extra prompt token, fitted over the base-model arms (they differ only in prompt length)."""
    xs, ys = [], []
    base = {a.arm for a in arms if a.family != LORA}
    for item in summary.items:
        for name in base:
            out = item["outputs"][name]
            if out["ttft_ms"] is not None:
                xs.append(out["prompt_tokens"])
                ys.append(out["ttft_ms"])
    if len(set(xs)) < 2:
        return None
    slope, _ = np.polyfit(xs, ys, 1)
    return float(slope)


def curve_summary(summary: Summary, arms: Sequence[CurveArm], seed: int = 0) -> CurveSummary:
    metric = summary.primary_metric
    groups: dict[tuple[str, int], list[CurveArm]] = {}
    for a in arms:
        groups.setdefault((a.family, a.x), []).append(a)
    order = {ZERO_SHOT: 0, LORA: 2}  # zero-shot, then each selector's points, then LoRA
    points = [
        _point(summary, family, x, group, seed)
        for (family, x), group in sorted(groups.items(), key=lambda g: (order.get(g[0][0], 1), g[0]))
    ]
    icl = [a for a in arms if a.family != LORA]
    best_icl = (
        max(icl, key=lambda a: (summary.arm(a.arm).metrics[metric].value, -summary.arm(a.arm).mean_prompt_tokens)).arm if icl else None
    )
    crossover, crossover_test = None, None
    lora_points = sorted((p for p in points if p.family == LORA), key=lambda p: p.x)
    if best_icl is not None:
        reference = _item_scores(summary, best_icl)
        for p in lora_points:
            per_item = list(np.mean([_item_scores(summary, n) for n in p.arms], axis=0))
            test = paired_bootstrap(per_item, reference, seed=seed)
            if test.significant and test.difference.value > 0:
                crossover, crossover_test = p.x, test
                break
    slope = prompt_cost(summary, arms)
    break_even = []
    if best_icl is not None:
        icl_arm = summary.arm(best_icl)
        for p in lora_points:
            saved = icl_arm.mean_ttft_ms - p.ttft_ms if icl_arm.mean_ttft_ms is not None and p.ttft_ms is not None else None
            queries = p.train_seconds * 1000 / saved if saved and saved > 0 and p.train_seconds is not None else None
            break_even.append(BreakEven(p.x, best_icl, saved, icl_arm.mean_prompt_tokens - p.prompt_tokens, queries))
    result = CurveSummary(metric, points, best_icl, crossover, crossover_test, slope, break_even, [])
    result.lines = curve_lines(summary, result)
    return result


def curve_lines(summary: Summary, curve: CurveSummary) -> list[str]:
    """The curve's answer in words: best ICL arm, crossover, seed spread, break-even."""
    metric = curve.metric
    lines = []
    if curve.best_icl is not None:
        lines.append(f"Best ICL arm: **{curve.best_icl}** with {fmt_metric(metric, summary.arm(curve.best_icl).metrics[metric].value)}.")
    lora = [p for p in curve.points if p.family == LORA]
    if lora and curve.best_icl is not None:
        if curve.crossover is None:
            lines.append(
                f"Crossover: none within the data - no LoRA size up to n={max(p.x for p in lora)} is significantly "
                f"above {curve.best_icl} (paired bootstrap on the seed-mean per item)."
            )
        else:
            assert curve.crossover_test is not None
            lines.append(
                f"Crossover at n={curve.crossover}: the LoRA seed-mean is above {curve.best_icl} by {fmt_difference(curve.crossover_test)}."
            )
        widest = max(lora, key=lambda p: (max(p.seed_values) - min(p.seed_values)) if p.seed_values else 0.0)
        if len(widest.seed_values) > 1:
            lines.append(
                f"Seed spread: widest at n={widest.x}, {fmt_metric(metric, min(widest.seed_values))} to "
                f"{fmt_metric(metric, max(widest.seed_values))} over {len(widest.seed_values)} training seeds."
            )
    by_x = {p.x: p for p in lora}
    for b in curve.break_even:
        worse = by_x[b.lora_x].value.value < summary.arm(b.versus).metrics[metric].value
        caveat = f" - but it is less accurate than {b.versus}" if worse else ""
        if b.queries is not None:
            lines.append(
                f"Break-even n={b.lora_x}: training is repaid after {b.queries:,.0f} queries "
                f"({b.ttft_saved_ms:.0f} ms TTFT saved per query against {b.versus}){caveat}."
            )
        else:
            lines.append(f"Break-even n={b.lora_x}: never - a query saves no TTFT against {b.versus}{caveat}.")
    return lines


def seed_spread(point: CurvePoint, metric: str) -> str:
    """ "62.0% ± 3.1 (58.0%-66.0%, 3 seeds)", or "-" for a point without seeds."""
    if not point.seed_values:
        return "-"
    sd = point.seed_sd
    spread = f" ± {sd * 100:.1f}" if sd is not None else ""
    return (
        f"{fmt_metric(metric, fmean(point.seed_values))}{spread} ({fmt_metric(metric, min(point.seed_values))}-"
        f"{fmt_metric(metric, max(point.seed_values))}, {len(point.seed_values)} seed{'s' if len(point.seed_values) > 1 else ''})"
    )
