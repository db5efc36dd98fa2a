"""A comparison's report folder: report.json (everything), report.md (table + verdict), plot.png.

The folder is built in a temp dir and renamed into place, so `tunelab reports` never lists a
half-written report; rewriting a report (a resumed or extended comparison) swaps it whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.engine.reward_report import RewardSummary
from tunelab.engine.summary import Summary, fmt_interval, fmt_points
from tunelab.errors import TunelabError
from tunelab.stores.files import atomic_dir, atomic_write_text

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "plot.png"


def report_dir(settings: Settings, comparison_id: int) -> Path:
    return settings.home / "reports" / str(comparison_id)


def write_report(settings: Settings, summary: Summary) -> Path:
    final = report_dir(settings, summary.comparison_id)
    with atomic_dir(final) as tmp:
        atomic_write_text(tmp / REPORT_JSON, json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
        atomic_write_text(tmp / REPORT_MD, markdown(summary, final / REPORT_PNG))
        plot(summary, tmp / REPORT_PNG)
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
        "| arm | accuracy | chrF | ROUGE-L | prompt tok | reply tok | TTFT ms | total ms | tok/s | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in summary.arms:
        lines.append(
            f"| {a.arm} | {fmt_interval('accuracy', a.metrics['accuracy'])} | {fmt_interval('chrf', a.metrics['chrf'])} "
            f"| {fmt_interval('rouge_l', a.metrics['rouge_l'])} | {a.mean_prompt_tokens:.0f} | {a.mean_completion_tokens:.1f} "
            f"| {whole_or_dash(a.mean_ttft_ms)} | {whole_or_dash(a.mean_total_ms)} | {whole_or_dash(a.mean_decode_tps)} | {a.wall_s:.1f} |"
        )
    lines += ["", f"## Paired differences on {metric} (row minus column arm)", "", "| a | b | a - b | p | verdict |", "|---|---|---|---|---|"]
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


def reward_markdown(reward: RewardSummary) -> list[str]:
    """The feedback loop's columns: mean reward per arm, reward-model win-rate against the first arm, blind votes."""
    lines = ["", f"## Reward model `{reward.reward_model}` (win-rate vs **{reward.first_arm}** per item, ties half, 95% Wilson)", "",
             "| arm | mean reward | wins vs first | W / L / T |", "|---|---|---|---|"]
    for a in reward.arms:
        v = a.versus_first
        rate = f"{v.rate.value:.0%} [{v.rate.low:.0%}, {v.rate.high:.0%}]" if v else "-"
        record = f"{v.wins} / {v.losses} / {v.ties}" if v else "-"
        lines.append(f"| {a.arm} | {a.mean:+.3f} | {rate} | {record} |")
    if reward.votes:
        lines += ["", "Blind side-by-side votes between these arms:", ""]
        lines += [f"- {v.a} vs {v.b}: {v.a} wins {v.rate.value:.0%} [{v.rate.low:.0%}, {v.rate.high:.0%}] "
                  f"(n={v.n}: {v.wins}W {v.losses}L {v.ties}T {v.both_bad} both bad)" for v in reward.votes]
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
