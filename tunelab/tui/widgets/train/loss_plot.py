"""The training loss per step, drawn in the terminal with plotext (live during a run)."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class LossPlot(PlotextPlot):
    def show(self, steps: list[int], losses: list[float], title: str) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if steps:
            plt.plot(steps, losses, marker="braille")
            plt.xlim(0, max(steps) + 1)
        plt.xlabel("step")
        plt.title(title)
        self.refresh()
