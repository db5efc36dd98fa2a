"""Comparison end to end on the bundled model: the demo bank, a few-step LoRA, reports, resume, leakage, CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from compare_support import base_pair, few_step_adapter, sentiment_bank  # noqa: F401

from tunelab.cli import cli
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm, standard_grid
from tunelab.eval.report import REPORT_JSON, REPORT_MD, REPORT_PNG
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.compare import Progress, finish, run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import TestSet, bank_test_set
from tunelab.stores.banks import BankStore
from tunelab.stores.comparisons import ComparisonItem, ComparisonStore
from tunelab.stores.runs import adapter_training_ids


def _runner(settings, conn, bank, engine) -> ArmRunner:
    return ArmRunner(Runtime(settings, conn, engine=engine), bank)


@pytest.mark.slow
def test_end_to_end_grid_with_lora_writes_a_report_and_never_leaks(settings, conn, engine, sentiment_bank, few_step_adapter):
    runner = _runner(settings, conn, sentiment_bank, engine)
    test_set = bank_test_set(conn, sentiment_bank, limit=4)
    arms = standard_grid(["jaccard", "embedding", "random"], 2, [few_step_adapter])[:5]  # base x 4, lora zero-shot
    assert [a.name for a in arms][-1] == f"lora:{few_step_adapter}"
    events: list[Progress] = []
    comparison = run_comparison(runner, test_set, arms, greedy(6), events.append)
    assert [e.done for e in events] == list(range(1, 21)) and not any(e.reused for e in events)
    comparison, path = finish(settings, conn, comparison.id, sentiment_bank.labels, test_set.warnings)
    assert comparison.status == "done" and comparison.report_dir == str(path)

    report = json.loads((path / REPORT_JSON).read_text())
    assert [a["arm"] for a in report["arms"]] == [a.name for a in arms]
    assert report["primary_metric"] == "accuracy"
    for arm in report["arms"]:
        assert 0.0 <= arm["metrics"]["accuracy"]["low"] <= arm["metrics"]["accuracy"]["value"] <= arm["metrics"]["accuracy"]["high"] <= 1.0
    icl_tokens = [a["mean_prompt_tokens"] for a in report["arms"] if "@" in a["arm"]]
    assert min(icl_tokens) > report["arms"][0]["mean_prompt_tokens"]  # ICL costs prompt tokens
    assert "## Verdict" in (path / REPORT_MD).read_text()
    assert (path / REPORT_PNG).stat().st_size > 1000

    test_keys = {item.key for item in test_set.items}
    test_inputs = {item.input for item in test_set.items}
    for item in report["items"]:
        for name, out in item["outputs"].items():
            assert out["provenance"]["model_sha256"] and out["provenance"]["arm"] == name
            used = {str(e["id"]) for e in out["examples"]}
            assert len(used) == (2 if "@" in name else 0)
            assert not used & test_keys and not {e["input"] for e in out["examples"]} & test_inputs
    assert not {str(i) for i in adapter_training_ids(conn, few_step_adapter)} & test_keys


@pytest.mark.slow
def test_interrupted_comparison_resumes_and_gives_the_same_report(settings, conn, engine, sentiment_bank):
    runner = _runner(settings, conn, sentiment_bank, engine)
    test_set = bank_test_set(conn, sentiment_bank, limit=3)
    arms = [Arm(), Arm(None, "jaccard", 2)]
    seen: list[Progress] = []

    def stop_after_four(event: Progress) -> None:
        seen.append(event)
        if event.done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_comparison(runner, test_set, arms, greedy(6), stop_after_four)
    comparison_id = seen[-1].done and ComparisonStore(conn).list()[0].id
    with pytest.raises(TunelabError, match="resume"):
        finish(settings, conn, comparison_id, sentiment_bank.labels)
    stored = {(r.arm, r.position): r.output for r in ComparisonStore(conn).results(comparison_id)}
    assert len(stored) == 4

    resumed: list[Progress] = []
    again = run_comparison(runner, test_set, arms, greedy(6), resumed.append)
    assert again.id == comparison_id
    assert [e.reused for e in resumed] == [True] * 4 + [False] * 2
    _, path = finish(settings, conn, comparison_id, sentiment_bank.labels)
    first = json.loads((path / REPORT_JSON).read_text())
    assert all(first["items"][pos]["outputs"][arm]["output"] == out for (arm, pos), out in stored.items())

    rerun: list[Progress] = []
    run_comparison(runner, test_set, arms, greedy(6), rerun.append)
    assert all(e.reused for e in rerun)
    _, path = finish(settings, conn, comparison_id, sentiment_bank.labels)
    assert json.loads((path / REPORT_JSON).read_text()) == first


def test_leakage_guard_refuses_test_items_from_the_icl_pool(settings, conn, engine, sentiment_bank):
    runner = _runner(settings, conn, sentiment_bank, engine)
    train = BankStore(conn).examples(sentiment_bank.name, split="train")[:2]
    leaky = TestSet(sentiment_bank.name, [ComparisonItem(i, str(e.id), e.input, e.output) for i, e in enumerate(train)], "constructed")
    with pytest.raises(TunelabError, match="ICL pool"):
        run_comparison(runner, leaky, [Arm()], greedy(4))
    assert ComparisonStore(conn).list() == []


@pytest.mark.slow
def test_cli_compare_reports_and_test_file_duplicates(settings, conn, sentiment_bank, tmp_path):
    train = BankStore(conn).examples(sentiment_bank.name, split="train")[0]
    test = BankStore(conn).examples(sentiment_bank.name, split="test")[0]
    test_file = tmp_path / "held_out.jsonl"
    test_file.write_text("\n".join(json.dumps({"input": e.input, "output": e.output}) for e in (test, train)) + "\n")
    runner = CliRunner()
    args = ["compare", "--bank", sentiment_bank.name, "--selectors", "jaccard", "--k", "2", "--max-tokens", "4", "--n-ctx", "2048"]
    result = runner.invoke(cli, [*args, "--test-file", str(test_file)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 of 2 test items also appear" in result.stderr
    assert "## Verdict" in result.stdout and "| base+jaccard@2 |" in result.stdout
    listing = runner.invoke(cli, ["reports"], catch_exceptions=False)
    assert (listing.exit_code == 0 and "sentiment" in listing.output.lower()) or sentiment_bank.name in listing.output
    (comparison,) = ComparisonStore(conn).list()
    shown = runner.invoke(cli, ["reports", "show", str(comparison.id)], catch_exceptions=False)
    assert shown.exit_code == 0 and "## Arms" in shown.stdout
    bad = runner.invoke(cli, ["compare", "--bank", sentiment_bank.name, "--selectors", "bm25"])
    assert bad.exit_code != 0
