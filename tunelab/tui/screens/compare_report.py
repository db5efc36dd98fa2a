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

from tunelab.eval.baselines import NOT_A_LABEL
from tunelab.eval.report import CURVE_PNG, REPORT_PNG, load_report, whole_or_dash
from tunelab.eval.statistics import Interval
from tunelab.eval.summary import fmt_interval
from tunelab.tui.widgets.compare.curve_plot import CurvePlot
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
                    yield Static(id="report-baselines")
                    yield Static(id="report-detail")
                yield CurvePlot(id="report-plot") if self.report.get("curve") else ReportPlot(id="report-plot")
            png = CURVE_PNG if self.report.get("curve") else REPORT_PNG
            yield Label(f"PNG: {self.report_dir / png}", id="report-png")
        yield Footer()

    def on_mount(self) -> None:
        report = self.report
        self.sub_title = f"comparison {report['comparison_id']} · bank {report['bank']}"
        metric = report["primary_metric"]
        baselines = report.get("baselines")
        arms = self.query_one("#report-arms", DataTable)
        arms.add_columns("arm", metric, "prompt tok", "TTFT ms", "tok/s", "calls", "all tok", "wall s")
        if baselines:
            arms.add_columns("macro-F1", "not a label", "vs majority")
            arms.add_row(
                f"majority: always {baselines['majority_label']}",
                f"{baselines['majority_rate']:.1%}",
                *[""] * 6,
                f"{baselines['majority_macro_f1'] * 100:.1f}",
                "0.0%",
                "",
            )
            arms.add_row(f"uniform chance (1/{len(baselines['labels']) or 1})", f"{baselines['uniform_rate']:.1%}", *[""] * 9)
        errors = {e["arm"]: e for e in baselines["arms"]} if baselines else {}
        for a in report["arms"]:
            m = a["metrics"][metric]
            extra = []
            if baselines:
                e = errors[a["arm"]]
                standing = "above" if e["above_majority"] else ("BELOW" if m["value"] < baselines["majority_rate"] else "not above")
                extra = [f"{e['macro_f1'] * 100:.1f}", f"{e['not_a_label']:.1%}", f"{standing} (p={e['p_above_majority']:.2g})"]
            arms.add_row(
                a["arm"],
                fmt_interval(metric, _interval(m)),
                f"{a['mean_prompt_tokens']:.0f}",
                whole_or_dash(a["mean_ttft_ms"]),
                whole_or_dash(a["mean_decode_tps"]),
                f"{a.get('mean_calls', 1.0):.1f}",  # reports written before decomposition arms: one call each
                whole_or_dash(a.get("mean_all_tokens")),
                f"{a['wall_s']:.1f}",
                *extra,
            )
        verdict = list(report["verdict"]) + (report["curve"]["lines"] if report.get("curve") else [])
        self.query_one("#report-verdict", Static).update(Text("\n".join(line.replace("**", "") for line in verdict)))
        self.query_one("#report-baselines", Static).update(baselines_text(baselines) if baselines else Text())
        items = self.query_one("#report-items", DataTable)
        names = [a["arm"] for a in report["arms"]]
        items.add_columns("#", "input", *names)
        for item in report["items"]:
            marks = [_mark(item["outputs"][n]["scores"], metric) for n in names]
            items.add_row(str(item["position"]), item["input"][:40].replace("\n", " "), *marks, key=str(item["position"]))
        if report.get("curve"):
            self.query_one("#report-plot", CurvePlot).show(report)
        else:
            self.query_one("#report-plot", ReportPlot).show(report)
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


def baselines_text(baselines: dict[str, Any]) -> Text:
    """The test split's label counts and each arm's confusion matrix (rows: reference, columns: reply)."""
    n = sum(baselines["distribution"].values())
    text = Text()
    text.append("test labels  ", style="bold")
    text.append(", ".join(f"{label} {count} ({count / n:.0%})" for label, count in baselines["distribution"].items()) + "\n")
    columns = [*baselines["distribution"], NOT_A_LABEL]
    for errors in baselines["arms"]:
        text.append(f"\n{errors['arm']}", style="bold")
        text.append("  reference → " + " | ".join(columns) + "\n", style="dim")
        for ref, row in errors["confusion"].items():
            text.append(f"  {ref}: " + " | ".join(str(row[c]) for c in columns) + "\n")
    return text


def _interval(data: dict[str, float]) -> Interval:
    return Interval(data["value"], data["low"], data["high"])


def _mark(scores: dict[str, float], metric: str) -> str:
    value = scores[metric]
    return ("✓" if value >= 1 else "✗") if metric == "accuracy" else f"{value * 100:.0f}"
