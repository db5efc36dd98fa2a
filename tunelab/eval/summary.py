"""From stored per-item results to what a careful reader needs: per-arm intervals, paired tests, a verdict.

The verdict answers the product's question in plain words - which arm wins, by how much, whether
that could be chance, and what it costs in prompt tokens - and says "not significant" rather
than crowning a winner the data cannot tell apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from statistics import fmean
from typing import TYPE_CHECKING, Any

from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.eval.baselines import LabelBaselines, label_baselines, task_labels
from tunelab.eval.metrics import ACCURACY, METRICS
from tunelab.eval.reward_report import RewardSummary
from tunelab.eval.statistics import Interval, PairedTest, bootstrap_ci, paired_test
from tunelab.stores.comparisons import Comparison, ComparisonItem, ItemResult

if TYPE_CHECKING:
    from tunelab.eval.curve_summary import CurveSummary
    from tunelab.eval.distill_summary import DistillSummary


@dataclass
class ArmSummary:
    arm: str
    n: int
    metrics: dict[str, Interval]
    mean_prompt_tokens: float
    mean_completion_tokens: float
    mean_ttft_ms: float | None
    mean_total_ms: float
    mean_decode_tps: float | None
    wall_s: float
    """Selection + prompt building + generation (every call of a decomposition), summed over items."""
    finish_reasons: dict[str, int]
    mean_calls: float = 1.0
    """Model calls per item: 1, or more for a decomposition arm (plan, steps, chunk notes, answer)."""
    mean_all_tokens: float = 0.0
    """Prompt + reply tokens per item across all its calls: what "more steps" costs."""


@dataclass
class PairSummary:
    a: str
    b: str
    metric: str
    test: PairedTest


@dataclass
class Summary:
    comparison_id: int
    bank: str
    primary_metric: str
    config: dict[str, Any]
    arms: list[ArmSummary]
    pairs: list[PairSummary]
    verdict: list[str]
    items: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    reward: RewardSummary | None = None
    """The reward model's scores per arm (`compare --reward-model`), and blind votes between the arms."""
    baselines: LabelBaselines | None = None
    """Label tasks only: majority / chance reference rates, confusion matrices, the test against the majority."""
    curve: CurveSummary | None = None
    """`tunelab curve`: the metric against the number of examples for ICL and LoRA, crossover, cost."""
    distillation: DistillSummary | None = None
    """Adapters trained on a teacher's answers, where the teacher is an arm too: agreement with it."""

    def arm(self, name: str) -> ArmSummary:
        return next(a for a in self.arms if a.arm == name)

    def pair(self, a: str, b: str) -> PairSummary:
        """The test of a - b (flipped from the stored b - a if needed)."""
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
            if (p.a, p.b) == (b, a):
                d = p.test.difference
                flipped = PairedTest(
                    Interval(-d.value, -d.high, -d.low),
                    p.test.p_value,
                    p.test.method,
                    p.test.n,
                    p.test.discordant[::-1] if p.test.discordant else None,
                )
                return PairSummary(a, b, p.metric, flipped)
        raise KeyError((a, b))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for pair, pair_summary in zip(data["pairs"], self.pairs):
            pair["test"] = pair_summary.test.to_dict()
        if self.baselines is not None:
            data["baselines"]["balanced"] = self.baselines.balanced
            for arm, errors in zip(data["baselines"]["arms"], self.baselines.arms):
                arm["above_majority"] = errors.above_majority
        if self.curve is not None:
            for point, curve_point in zip(data["curve"]["points"], self.curve.points):
                point["seed_sd"] = curve_point.seed_sd
        return data


def step_calls(result: ItemResult) -> list[dict[str, Any]]:
    """A decomposition's intermediate calls, as stored in the result's provenance (none for one call)."""
    return list(result.provenance.get("steps") or [])


def all_tokens(result: ItemResult) -> int:
    """Prompt and reply tokens of every call made for the result, the final one included."""
    steps = step_calls(result)
    return result.prompt_tokens + result.completion_tokens + sum(s["prompt_tokens"] + s["completion_tokens"] for s in steps)


def all_ms(result: ItemResult) -> float:
    return result.total_ms + sum(s["total_ms"] for s in step_calls(result))


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def summarize(
    comparison: Comparison,
    items: Sequence[ComparisonItem],
    results: Sequence[ItemResult],
    primary_metric: str,
    warnings: Sequence[str] = (),
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> Summary:
    """Intervals per arm for every metric, paired tests on the primary metric, label baselines
    (accuracy tasks: `labels`, default the bank labels stored in the comparison's config), and the verdict."""
    by_arm: dict[str, dict[int, ItemResult]] = {}
    for r in results:
        by_arm.setdefault(r.arm, {})[r.position] = r
    positions = [i.position for i in items]
    missing = [arm for arm in comparison.arms if set(by_arm.get(arm, {})) != set(positions)]
    if missing:
        raise TunelabError(f"comparison {comparison.id} is unfinished for arm(s) {', '.join(missing)}: run it again to resume")
    arms = []
    for name in comparison.arms:
        rows = [by_arm[name][p] for p in positions]
        arms.append(
            ArmSummary(
                arm=name,
                n=len(rows),
                metrics={m: bootstrap_ci([r.scores[m] for r in rows], seed=seed) for m in METRICS},
                mean_prompt_tokens=fmean(r.prompt_tokens for r in rows),
                mean_completion_tokens=fmean(r.completion_tokens for r in rows),
                mean_ttft_ms=_mean([r.ttft_ms for r in rows]),
                mean_total_ms=fmean(r.total_ms for r in rows),
                mean_decode_tps=_mean([r.decode_tps for r in rows]),
                wall_s=sum(all_ms(r) + r.provenance.get("selection_ms", 0.0) for r in rows) / 1000,
                finish_reasons=dict(Counter(r.finish_reason for r in rows)),
                mean_calls=fmean(1 + len(step_calls(r)) for r in rows),
                mean_all_tokens=fmean(all_tokens(r) for r in rows),
            )
        )
    pairs = [
        PairSummary(
            a,
            b,
            primary_metric,
            paired_test(
                [by_arm[a][p].scores[primary_metric] for p in positions],
                [by_arm[b][p].scores[primary_metric] for p in positions],
                binary=primary_metric == ACCURACY,
                seed=seed,
            ),
        )
        for a, b in combinations(comparison.arms, 2)
    ]
    item_rows = [
        {
            "position": item.position,
            "key": item.key,
            "input": item.input,
            "reference": item.reference,
            "outputs": {name: by_arm[name][item.position].to_dict() for name in comparison.arms},
        }
        for item in items
    ]
    summary = Summary(comparison.id, comparison.bank, primary_metric, comparison.config, arms, pairs, [], item_rows, list(warnings))
    if primary_metric == ACCURACY:
        chosen = task_labels(comparison.config.get("labels", []) if labels is None else labels, [i.reference for i in items])
        summary.baselines = label_baselines(item_rows, comparison.arms, chosen)
    summary.verdict = verdict(summary)
    return summary


def fmt_metric(metric: str, value: float) -> str:
    return f"{value * 100:.1f}%" if metric == ACCURACY else f"{value * 100:.1f}"


def fmt_interval(metric: str, ci: Interval) -> str:
    return f"{fmt_metric(metric, ci.value)} [{fmt_metric(metric, ci.low)}, {fmt_metric(metric, ci.high)}]"


def fmt_points(value: float) -> str:
    """A difference in percentage points, signed, without a "-0.0" from float noise."""
    return f"{round(value * 100, 1) + 0.0:+.1f}"


def fmt_difference(test: PairedTest) -> str:
    d = test.difference
    return (
        f"{fmt_points(d.value)} points (95% CI {fmt_points(d.low)} to {fmt_points(d.high)}; "
        f"{test.method} p={test.p_value:.3g}, {test.verdict})"
    )


def _vs(summary: Summary, a: str, b: str) -> str:
    metric = summary.primary_metric
    test = summary.pair(a, b).test
    cost = summary.arm(a).mean_prompt_tokens - summary.arm(b).mean_prompt_tokens
    return (
        f"**{a}** vs **{b}**: {fmt_difference(test)}; "
        f"{fmt_metric(metric, summary.arm(a).metrics[metric].value)} vs {fmt_metric(metric, summary.arm(b).metrics[metric].value)}, "
        f"{cost:+.0f} prompt tokens per item."
    )


def verdict(summary: Summary) -> list[str]:
    """A few sentences: the winner and its interval, its margin over the runner-up and over the
    plain base model, its token cost, and ICL vs fine-tune when both were run."""
    metric = summary.primary_metric
    ranked = sorted(summary.arms, key=lambda a: (-a.metrics[metric].value, a.mean_prompt_tokens, a.arm))
    best = ranked[0]
    baselines = summary.baselines
    if baselines is not None and not baselines.arm(best.arm).above_majority:
        return no_winner(summary, ranked, baselines)
    above = f", significantly above {majority_phrase(baselines)}" if baselines is not None else ""
    lines = [
        f"Best arm on {metric}: **{best.arm}** with {fmt_interval(metric, best.metrics[metric])} over {best.n} items, "
        f"at {best.mean_prompt_tokens:.0f} prompt tokens per item{above}."
    ]
    if len(ranked) == 1:
        return lines + (baseline_lines(summary, ranked, baselines) if baselines is not None else [])
    runner_up = ranked[1]
    lines.append("Margin over the runner-up: " + _vs(summary, best.arm, runner_up.arm))
    if not summary.pair(best.arm, runner_up.arm).test.significant:
        lines.append(f"The top two cannot be told apart on these {best.n} items: more test items would be needed.")
    base = Arm().name
    if best.arm != base and base in {a.arm for a in summary.arms} and runner_up.arm != base:
        lines.append("Against the zero-shot base model: " + _vs(summary, best.arm, base))
    icl = [a for a in ranked if Arm.parse(a.arm).is_icl and Arm.parse(a.arm).adapter is None and Arm.parse(a.arm).model is None]
    tuned = [a for a in ranked if Arm.parse(a.arm).adapter is not None and not Arm.parse(a.arm).is_icl]
    if icl and tuned and {tuned[0].arm, icl[0].arm} != {best.arm, runner_up.arm}:
        lines.append("ICL vs fine-tune (best of each): " + _vs(summary, tuned[0].arm, icl[0].arm))
    lines += cache_lines(summary)
    if summary.primary_metric == ACCURACY:
        lines.append(
            "Significance of accuracy differences is McNemar's exact test; at small n the bootstrap interval "
            "can exclude 0 while the exact test does not - trust the test."
        )
    if baselines is not None:
        lines += baseline_lines(summary, ranked, baselines)
    return lines


def cache_lines(summary: Summary) -> list[str]:
    """For each `~cached` arm run beside its exact twin: what answering from the example cache
    cost in quality (the paired difference and its interval) and what it saved in TTFT."""
    names = {a.arm for a in summary.arms}
    lines = []
    for arm in summary.arms:
        parsed = Arm.parse(arm.arm)
        exact = replace(parsed, cached=False).name
        if not parsed.cached or exact not in names:
            continue
        twin = summary.arm(exact)
        ttft = (
            f"TTFT {twin.mean_ttft_ms:.0f} ms exact vs {arm.mean_ttft_ms:.0f} ms cached ({twin.mean_ttft_ms / arm.mean_ttft_ms:.2f}x faster)"
            if arm.mean_ttft_ms and twin.mean_ttft_ms
            else "TTFT not measured"
        )
        lines.append(f"Example cache: **{arm.arm}** vs **{exact}**: {fmt_difference(summary.pair(arm.arm, exact).test)}; {ttft}.")
    return lines


def majority_phrase(baselines: LabelBaselines) -> str:
    return f"always answering **{baselines.majority_label}** ({baselines.majority_rate:.1%} of the test items)"


def no_winner(summary: Summary, ranked: Sequence[ArmSummary], baselines: LabelBaselines) -> list[str]:
    """No arm is significantly above the majority baseline: say so, and crown nobody."""
    best = ranked[0]
    metric = summary.primary_metric
    return [
        f"No arm is significantly above {majority_phrase(baselines)}: no arm wins. The highest, **{best.arm}**, has "
        f"{fmt_interval(metric, best.metrics[metric])} (p={baselines.arm(best.arm).p_above_majority:.3g} against the majority rate).",
        *baseline_lines(summary, ranked, baselines),
    ]


def baseline_lines(summary: Summary, ranked: Sequence[ArmSummary], baselines: LabelBaselines) -> list[str]:
    """The arms the majority baseline calls out, and how they were tested."""
    metric = summary.primary_metric
    flagged = [a for a in ranked if not baselines.arm(a.arm).above_majority]
    lines = []
    if flagged:
        shown = "; ".join(
            f"{a.arm} {fmt_metric(metric, a.metrics[metric].value)} (p={baselines.arm(a.arm).p_above_majority:.3g}"
            + (", below it" if a.metrics[metric].value < baselines.majority_rate else "")
            + ")"
            for a in flagged
        )
        lines.append(f"Not significantly above {majority_phrase(baselines)}: {shown}.")
    lines.append(f"Baseline test: {baselines.test}.")
    return lines
