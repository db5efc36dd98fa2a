"""`--json` and `-n` on the list and show commands: one array / object each, the documented field names."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from test_compare import _fill

from tunelab.cli import cli
from tunelab.eval.report import write_report
from tunelab.eval.summary import summarize
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore
from tunelab.stores.comparisons import ComparisonStore


def invoke(*args: str) -> object:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_bank_list_and_show(conn, tmp_path: Path) -> None:
    store = BankStore(conn)
    rows = [ExampleRow(f"question {i}", f"answer {i}", i + 1) for i in range(6)]
    store.create("qa", rows, "Answer briefly.", test_size=0.34, seed=1)
    store.create("more", rows[:3], "")
    listed = invoke("bank", "list", "--json")
    assert {b["name"] for b in listed} == {"qa", "more"}
    assert set(listed[0]) == {"id", "name", "instruction", "test_size", "seed", "source", "created_at", "n_train", "n_test", "labels"}
    assert len(invoke("bank", "list", "--json", "-n", "1")) == 1
    shown = invoke("bank", "show", "qa", "--json", "--split", "train", "-n", "2")
    assert shown["instruction"] == "Answer briefly." and shown["n_train"] + shown["n_test"] == 6
    assert len(shown["examples"]) == 2 and {e["split"] for e in shown["examples"]} == {"train"}
    assert set(shown["examples"][0]) == {"id", "input", "output", "split"}


def test_models_list(bundled_model: Path) -> None:
    bundled, *packaged = invoke("models", "list", "--json")
    assert bundled == {
        "name": "smollm2-135m",
        "source": "bundled",
        "path": str(bundled_model),
        "size_bytes": bundled_model.stat().st_size,
        "install": None,
        "default": True,
    }
    # the optional packaged models (tunelab[gemma], installed by scripts/setup.sh): listed, never the default
    assert [(m["name"], m["source"], m["default"]) for m in packaged] == [("gemma3-270m", "package", False)]


def test_empty_lists_are_empty_arrays() -> None:
    for command in (
        ["adapters", "list"],
        ["adapters", "runs"],
        ["feedback", "list"],
        ["feedback", "list", "--counts"],
        ["reports", "list"],
        ["history", "list"],
    ):
        assert invoke(*command, "--json") == [], command


def test_reports_list_and_show(conn, settings) -> None:
    comparison_id = _fill(conn, {"base": [0, 1, 1, 0], "base+jaccard@4": [1, 1, 1, 1]})
    store = ComparisonStore(conn)
    summary = summarize(store.get(comparison_id), store.items(comparison_id), store.results(comparison_id), "accuracy")
    store.finish(comparison_id, str(write_report(settings, summary)))
    (listed,) = invoke("reports", "list", "--json", "-n", "5")
    assert listed["id"] == comparison_id and listed["status"] == "done" and listed["n_items"] == 4
    assert listed["arms"] == ["base", "base+jaccard@4"] and listed["verdict"] == summary.verdict
    shown = invoke("reports", "show", str(comparison_id), "--json")
    assert shown["comparison"]["id"] == comparison_id
    assert len(shown["report"]["items"]) == 4 and shown["report"]["verdict"] == summary.verdict
