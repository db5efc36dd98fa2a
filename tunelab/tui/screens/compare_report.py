"""The report viewer: arms table with CIs, the verdict, per-item outputs, and the plot in the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from tunelab.engine.statistics import Interval
from tunelab.engine.summary import fmt_interval
from tunelab.stores.reports import REPORT_PNG, load_report, whole_or_dash
from tunelab.tui.widgets.compare.report_plot import ReportPlot


class ReportScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="report.back")]

    def __init__(self, report_dir: str | Path) -> None:
        super().__init__()
        self.report_dir = Path(report_dir)
        self.report: dict[str, Any] = load_report(self.report_dir)

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="report-main"):
            yield DataTable(id="report-arms", cursor_type="row")
            yield Static(id="report-verdict")
            with Horizontal(id="report-lower"):
                yield DataTable(id="report-items", cursor_type="row")
                with VerticalScroll(id="report-detail-scroll"):
                    yield Static(id="report-detail")
                yield ReportPlot(id="report-plot")
            yield Label(f"PNG: {self.report_dir / REPORT_PNG}", id="report-png")
        yield Footer()

    def on_mount(self) -> None:
        report = self.report
        self.sub_title = f"comparison {report['comparison_id']} · bank {report['bank']}"
        metric = report["primary_metric"]
        arms = self.query_one("#report-arms", DataTable)
        arms.add_columns("arm", metric, "prompt tok", "TTFT ms", "tok/s", "wall s")
        for a in report["arms"]:
            m = a["metrics"][metric]
            arms.add_row(
                a["arm"],
                fmt_interval(metric, _interval(m)),
                f"{a['mean_prompt_tokens']:.0f}",
                whole_or_dash(a["mean_ttft_ms"]),
                whole_or_dash(a["mean_decode_tps"]),
                f"{a['wall_s']:.1f}",
            )
        self.query_one("#report-verdict", Static).update(Text("\n".join(line.replace("**", "") for line in report["verdict"])))
        items = self.query_one("#report-items", DataTable)
        names = [a["arm"] for a in report["arms"]]
        items.add_columns("#", "input", *names)
        for item in report["items"]:
            marks = [_mark(item["outputs"][n]["scores"], metric) for n in names]
            items.add_row(str(item["position"]), item["input"][:40].replace("\n", " "), *marks, key=str(item["position"]))
        self.query_one(ReportPlot).show(report)
        if report["items"]:
            self.show_item(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "report-items" and event.row_key.value is not None:
            self.show_item(int(event.row_key.value))

    def show_item(self, position: int) -> None:
        item = next(i for i in self.report["items"] if i["position"] == position)
        metric = self.report["primary_metric"]
        text = Text()
        text.append("input\n", style="bold")
        text.append(item["input"] + "\n\n")
        text.append("reference\n", style="bold")
        text.append(item["reference"] + "\n")
        for name, out in item["outputs"].items():
            text.append(f"\n{name}  ", style="bold")
            text.append(f"{metric} {out['scores'][metric]:.2f} · {out['prompt_tokens']} prompt tok\n", style="dim")
            text.append(out["output"] + "\n")
        self.query_one("#report-detail", Static).update(text)


def _interval(data: dict[str, float]) -> Interval:
    return Interval(data["value"], data["low"], data["high"])


def _mark(scores: dict[str, float], metric: str) -> str:
    value = scores[metric]
    return ("✓" if value >= 1 else "✗") if metric == "accuracy" else f"{value * 100:.0f}"
