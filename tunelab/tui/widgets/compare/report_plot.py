"""The report's primary metric per arm with its 95 % CI, drawn in the terminal with plotext."""

from __future__ import annotations

from typing import Any

from textual_plotext import PlotextPlot


class ReportPlot(PlotextPlot):
    def show(self, report: dict[str, Any]) -> None:
        metric = report["primary_metric"]
        arms = report["arms"]
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        xs = list(range(1, len(arms) + 1))
        values = [a["metrics"][metric]["value"] * 100 for a in arms]
        plt.bar(xs, values, width=0.4)
        # CI whiskers as vertical segments
        for x, arm in zip(xs, arms):
            ci = arm["metrics"][metric]
            plt.plot([x, x], [ci["low"] * 100, ci["high"] * 100], marker="braille")
        plt.xticks([float(x) for x in xs], [a["arm"] for a in arms])
        plt.ylim(0, 100)
        plt.title(f"{metric} per arm, % with 95% CI (n={len(report['items'])})")
        self.refresh()
