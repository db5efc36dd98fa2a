"""A report's learning curve in the terminal: one ICL line per selector, the LoRA seed-mean, its seeds,
and the majority baseline. x is log2(examples + 1) with the real counts as ticks (plotext has no symlog)."""

from __future__ import annotations

import math
from typing import Any

from textual_plotext import PlotextPlot

from tunelab.eval.curve_summary import LORA, ZERO_SHOT


def _x(examples: int) -> float:
    return math.log2(examples + 1)


class CurvePlot(PlotextPlot):
    def show(self, report: dict[str, Any]) -> None:
        curve = report["curve"]
        points = curve["points"]
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        zero = [p for p in points if p["family"] == ZERO_SHOT]
        families = list(dict.fromkeys(p["family"] for p in points if p["family"] not in (LORA, ZERO_SHOT)))
        for family in families or ([ZERO_SHOT] if zero else []):
            line = sorted(zero + ([] if family == ZERO_SHOT else [p for p in points if p["family"] == family]), key=lambda p: p["x"])
            plt.plot([_x(p["x"]) for p in line], [p["value"]["value"] * 100 for p in line], marker="braille", label=f"ICL {family}")
        lora = sorted((p for p in points if p["family"] == LORA), key=lambda p: p["x"])
        if lora:
            plt.plot([_x(p["x"]) for p in lora], [p["value"]["value"] * 100 for p in lora], marker="braille", label="LoRA seed mean")
            seeds = [(_x(p["x"]), v * 100) for p in lora for v in p["seed_values"]]
            plt.scatter([s[0] for s in seeds], [s[1] for s in seeds], marker="x", label="LoRA seeds")
        for p in points:  # 95% CI whiskers
            plt.plot([_x(p["x"])] * 2, [p["value"]["low"] * 100, p["value"]["high"] * 100], marker="braille", color="gray")
        baselines = report.get("baselines")
        if baselines:
            plt.hline(baselines["majority_rate"] * 100, "red")
        ticks = sorted({p["x"] for p in points})
        plt.xticks([_x(x) for x in ticks], [str(x) for x in ticks])
        plt.ylim(0, 100)
        majority = f", red = always {baselines['majority_label']}" if baselines else ""
        plt.title(f"{curve['metric']} vs examples (k in prompt / n trained){majority}")
        self.refresh()
