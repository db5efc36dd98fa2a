"""A comparison's report folder: report.json (everything), report.md (table + verdict), plot.png.

The folder is built in a temp dir and renamed into place, so `tunelab reports` never lists a
half-written report; rewriting a report (a resumed or extended comparison) swaps it whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.eval.baselines import NOT_A_LABEL, LabelBaselines
from tunelab.eval.curve_summary import LORA, ZERO_SHOT, CurveSummary, seed_spread
from tunelab.eval.distill_summary import DistillSummary
from tunelab.eval.metrics import ACCURACY
from tunelab.eval.reward_report import RewardSummary
from tunelab.eval.summary import Summary, fmt_interval, fmt_points
from tunelab.stores.files import atomic_dir, atomic_write_text

REPORT_JSON, REPORT_MD, REPORT_PNG, CURVE_PNG = "report.json", "report.md", "plot.png", "curve.png"


def report_dir(settings: Settings, comparison_id: int) -> Path:
    return settings.dirs.reports / str(comparison_id)


def write_report(settings: Settings, summary: Summary) -> Path:
    final = report_dir(settings, summary.comparison_id)
    with atomic_dir(final) as tmp:
        atomic_write_text(tmp / REPORT_JSON, json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
        atomic_write_text(tmp / REPORT_MD, markdown(summary, final / REPORT_PNG))
        plot(summary, tmp / REPORT_PNG)
        if summary.curve is not None:
            plot_curve(summary, summary.curve, tmp / CURVE_PNG)
    return final


def load_report(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / REPORT_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TunelabError(f"cannot read report {path / REPORT_JSON}: {exc}") from None


def whole_or_dash(value: float | None) -> str:
    """A mean rounded to a whole number, or "-" when nothing was measured (e.g. decode speed of
    one-token replies: there is no second token to time)."""
    return f"{value:.0f}" if value is not None else "-"


def markdown(summary: Summary, plot_path: Path) -> str:
    metric = summary.primary_metric
    config = summary.config
    lines = [
        f"# Comparison {summary.comparison_id}: bank `{summary.bank}`",
        "",
        f"{len(summary.items)} held-out items from {config.get('test_source', '?')}; model `{config.get('model', '?')}`; "
        f"sampler {json.dumps(config.get('sampler', {}))}.",
        "",
        "## Verdict",
        "",
        *[f"- {line}" for line in summary.verdict],
        "",
        f"## Arms (primary metric: {metric}; 95% bootstrap CIs)",
        "",
        "| arm | accuracy | chrF | ROUGE-L | prompt tok | reply tok | TTFT ms | total ms | tok/s | calls | all tok | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in summary.arms:
        lines.append(
            f"| {a.arm} | {fmt_interval('accuracy', a.metrics['accuracy'])} | {fmt_interval('chrf', a.metrics['chrf'])} "
            f"| {fmt_interval('rouge_l', a.metrics['rouge_l'])} | {a.mean_prompt_tokens:.0f} | {a.mean_completion_tokens:.1f} "
            f"| {whole_or_dash(a.mean_ttft_ms)} | {whole_or_dash(a.mean_total_ms)} | {whole_or_dash(a.mean_decode_tps)} "
            f"| {a.mean_calls:.1f} | {a.mean_all_tokens:.0f} | {a.wall_s:.1f} |"
        )
    if any(a.mean_calls > 1 for a in summary.arms):
        lines += [
            "",
            "Token and time columns up to tok/s are the final call's; *calls* and *all tok* (prompt + reply tokens per item) "
            "count every call of a decomposition arm (plan, steps, chunk notes), and *wall s* their time.",
        ]
    if summary.curve is not None:
        lines += curve_markdown(summary.curve, plot_path.with_name(CURVE_PNG))
    if summary.distillation is not None:
        lines += distill_markdown(summary.distillation)
    if summary.baselines is not None:
        lines += baselines_markdown(summary.baselines, summary)
    lines += [
        "",
        f"## Paired differences on {metric} (row minus column arm)",
        "",
        "| a | b | a - b | p | verdict |",
        "|---|---|---|---|---|",
    ]
    for p in summary.pairs:
        d = p.test.difference
        lines.append(
            f"| {p.a} | {p.b} | {fmt_points(d.value)} [{fmt_points(d.low)}, {fmt_points(d.high)}] | {p.test.p_value:.3g} ({p.test.method}) | {p.test.verdict} |"
        )
    if summary.reward is not None:
        lines += reward_markdown(summary.reward)
    if summary.warnings:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in summary.warnings]]
    lines += ["", f"Plot: `{plot_path}`. Every item, output and score: `report.json`.", ""]
    return "\n".join(lines)


def curve_markdown(curve: CurveSummary, plot_path: Path) -> list[str]:
    """The learning curve as a table (one row per point), its verdict, and what each point costs."""
    metric = curve.metric
    lines = [
        "",
        f"## Learning curve ({metric} against the number of examples; 95% bootstrap CIs)",
        "",
        *[f"- {line}" for line in curve.lines],
        "",
        f"| family | examples | {metric} | seed spread (mean ± sd, min-max) | prompt tok | TTFT ms | train s | train tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in curve.points:
        kind = "n train" if p.family == LORA else "k in prompt"
        lines.append(
            f"| {p.family} | {kind} {p.x} | {fmt_interval(metric, p.value)} | {seed_spread(p, metric)} | {p.prompt_tokens:.0f} "
            f"| {whole_or_dash(p.ttft_ms)} | {whole_or_dash(p.train_seconds)} | {whole_or_dash(p.train_tokens)} |"
        )
    if curve.ms_per_prompt_token is not None:
        lines += [
            "",
            f"Prompt cost on this machine: {curve.ms_per_prompt_token:.2f} ms of TTFT per prompt token "
            "(least-squares fit over the base-model replies). Train tokens = the run's mean tokens/s x its training seconds.",
        ]
    if curve.break_even:
        lines += [
            "",
            "| LoRA n | against | prompt tokens saved / query | TTFT saved ms / query | train s | break-even queries |",
            "|---|---|---|---|---|---|",
        ]
        by_x = {p.x: p for p in curve.points if p.family == LORA}
        for b in curve.break_even:
            saved = f"{b.ttft_saved_ms:.0f}" if b.ttft_saved_ms is not None else "-"
            queries = f"{b.queries:,.0f}" if b.queries is not None else "never"
            lines.append(
                f"| {b.lora_x} | {b.versus} | {b.prompt_tokens_saved:.0f} | {saved} | {whole_or_dash(by_x[b.lora_x].train_seconds)} | {queries} |"
            )
    lines += ["", f"Curve plot: `{plot_path}`."]
    return lines


def distill_markdown(distillation: DistillSummary) -> list[str]:
    """Each distilled student beside its teacher: agreement with the teacher, both against the gold."""
    metric = distillation.metric
    lines = [
        "",
        "## Distillation (students trained on a teacher's answers; 95% CIs)",
        "",
        f"| student | teacher | agrees with teacher | student {metric} | teacher {metric} | student - teacher | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in distillation.pairs:
        lines.append(
            f"| {p.student} | {p.teacher} | {fmt_interval(ACCURACY, p.agreement)} | {fmt_interval(metric, p.student_metric)} "
            f"| {fmt_interval(metric, p.teacher_metric)} | {fmt_points(p.gap.value)} [{fmt_points(p.gap.low)}, {fmt_points(p.gap.high)}] "
            f"| {p.gap_p_value:.3g} ({p.gap_verdict}) |"
        )
    lines += ["", "Agreement: the same label (or the same normalised first line) as the teacher's reply to the same item."]
    return lines


def baselines_markdown(baselines: LabelBaselines, summary: Summary) -> list[str]:
    """Reference rows (majority label, uniform chance), each arm's test against the majority, its
    non-label share and macro-F1 (when labels are unbalanced), and a confusion matrix per arm."""
    n = sum(baselines.distribution.values())
    spread = ", ".join(f"`{label}` {count} ({count / n:.1%})" for label, count in baselines.distribution.items())
    f1 = not baselines.balanced
    head = "| arm | accuracy |" + (" macro-F1 |" if f1 else "") + " not a label | p (accuracy > majority) | vs majority |"
    lines = ["", "## Baselines and errors", "", f"Test split labels: {spread}.", "", head, "|" + "---|" * (head.count("|") - 1)]
    f1_cell = (lambda value: f" {value * 100:.1f} |") if f1 else (lambda value: "")
    lines.append(
        f"| *majority: always `{baselines.majority_label}`* | {baselines.majority_rate:.1%} |"
        f"{f1_cell(baselines.majority_macro_f1)} 0.0% | - | - |"
    )
    lines.append(
        f"| *uniform chance (1/{len(baselines.labels) or 1})* | {baselines.uniform_rate:.1%} |" + (" - |" if f1 else "") + " - | - | - |"
    )
    for errors in baselines.arms:
        accuracy = summary.arm(errors.arm).metrics["accuracy"].value
        standing = "above" if errors.above_majority else ("**below**" if accuracy < baselines.majority_rate else "**not above**")
        lines.append(
            f"| {errors.arm} | {accuracy:.1%} |{f1_cell(errors.macro_f1)} {errors.not_a_label:.1%} "
            f"| {errors.p_above_majority:.3g} | {standing} |"
        )
    lines += [
        "",
        f"Test: {baselines.test}." + ("" if f1 else " Labels are balanced, so macro-F1 is left to report.json."),
        "",
        "### Confusion matrices (rows: reference, columns: reply)",
    ]
    for errors in baselines.arms:
        columns = [*baselines.distribution, NOT_A_LABEL]
        lines += ["", f"**{errors.arm}**", "", "| reference | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        lines += [f"| {ref} | " + " | ".join(str(row[c]) for c in columns) + " |" for ref, row in errors.confusion.items()]
    return lines


def reward_markdown(reward: RewardSummary) -> list[str]:
    """The feedback loop's columns: mean reward per arm, reward-model win-rate against the first arm, blind votes."""
    lines = [
        "",
        f"## Reward model `{reward.reward_model}` (win-rate vs **{reward.first_arm}** per item, ties half, 95% Wilson)",
        "",
        "| arm | mean reward | wins vs first | W / L / T |",
        "|---|---|---|---|",
    ]
    for a in reward.arms:
        v = a.versus_first
        rate = f"{v.rate.value:.0%} [{v.rate.low:.0%}, {v.rate.high:.0%}]" if v else "-"
        record = f"{v.wins} / {v.losses} / {v.ties}" if v else "-"
        lines.append(f"| {a.arm} | {a.mean:+.3f} | {rate} | {record} |")
    if reward.votes:
        lines += ["", "Blind side-by-side votes between these arms:", ""]
        lines += [
            f"- {v.a} vs {v.b}: {v.a} wins {v.rate.value:.0%} [{v.rate.low:.0%}, {v.rate.high:.0%}] "
            f"(n={v.n}: {v.wins}W {v.losses}L {v.ties}T {v.both_bad} both bad)"
            for v in reward.votes
        ]
    return lines


def plot(summary: Summary, path: Path) -> None:
    """Left: the primary metric per arm with its CI; right: the metric against mean prompt tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary.primary_metric
    names = [a.arm for a in summary.arms]
    values = [a.metrics[metric].value * 100 for a in summary.arms]
    lows = [v - a.metrics[metric].low * 100 for v, a in zip(values, summary.arms)]
    highs = [a.metrics[metric].high * 100 - v for v, a in zip(values, summary.arms)]
    tokens = [a.mean_prompt_tokens for a in summary.arms]
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(12, 4.5))
    bars.bar(range(len(names)), values, yerr=[lows, highs], capsize=4, color="#4C72B0")
    bars.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    bars.set_ylabel(f"{metric} (%, 95% CI)")
    bars.set_ylim(0, 100)
    bars.set_title(f"{summary.bank}: {metric} per arm (n={len(summary.items)})")
    scatter.errorbar(tokens, values, yerr=[lows, highs], fmt="o", capsize=4, color="#DD8452")
    for name, x, y in zip(names, tokens, values):
        scatter.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    scatter.set_xlabel("mean prompt tokens per item")
    scatter.set_ylabel(f"{metric} (%)")
    scatter.set_ylim(0, 100)
    scatter.set_title("quality vs token cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curve(summary: Summary, curve: CurveSummary, path: Path) -> None:
    """ICL lines (one per selector, from the zero-shot point) and the LoRA seed-mean with its CI
    and each seed's value, against the number of examples (symlog x: k = 0 fits), with the
    majority and chance rates as reference lines for label tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = curve.metric
    fig, ax = plt.subplots(figsize=(8, 5))
    zero = curve.family(ZERO_SHOT)
    families = list(dict.fromkeys(p.family for p in curve.points if p.family not in (LORA, ZERO_SHOT)))
    for family in families or ([ZERO_SHOT] if zero else []):
        points = sorted(zero + ([] if family == ZERO_SHOT else curve.family(family)), key=lambda p: p.x)
        _errorbar(ax, points, f"ICL {family} (k in prompt)" if family != ZERO_SHOT else ZERO_SHOT, "o-")
    lora = sorted(curve.family(LORA), key=lambda p: p.x)
    if lora:
        _errorbar(ax, lora, "LoRA (n train, seed mean)", "s-", color="black")
        for p in lora:
            ax.scatter([p.x] * len(p.seed_values), [v * 100 for v in p.seed_values], marker="x", color="grey", zorder=3)
    if summary.baselines is not None:
        ax.axhline(
            summary.baselines.majority_rate * 100, linestyle="--", color="red", label=f"majority ({summary.baselines.majority_label})"
        )
        ax.axhline(summary.baselines.uniform_rate * 100, linestyle=":", color="grey", label="uniform chance")
    ax.set_xscale("symlog", linthresh=1)
    counts = sorted({p.x for p in curve.points})
    ax.set_xticks(counts, [f"{x:g}" for x in counts])  # the counts run, not powers of ten (nor symlog's negative side)
    ax.set_xlim(-0.3, max(counts) * 1.4 if counts else 1)
    ax.set_xlabel("examples (k in the prompt for ICL, n trained on for LoRA)")
    ax.set_ylabel(f"{metric} (%, 95% CI)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{summary.bank}: learning curve (n={len(summary.items)} test items)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _errorbar(ax: Any, points: list[Any], label: str, fmt: str, color: str | None = None) -> None:
    xs = [p.x for p in points]
    ys = [p.value.value * 100 for p in points]
    low = [y - p.value.low * 100 for y, p in zip(ys, points)]
    high = [p.value.high * 100 - y for y, p in zip(ys, points)]
    ax.errorbar(xs, ys, yerr=[low, high], fmt=fmt, capsize=3, label=label, color=color)
