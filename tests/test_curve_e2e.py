"""A learning curve end to end on the bundled model: real trl training of tiny LoRA points, real llama.cpp
answers, the report and plot; the rerun reuses every adapter and answer (nothing trains or generates)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from finetune_support import base_pair  # noqa: F401

from tunelab.cli import cli
from tunelab.engine.llama_engine import LlamaEngine
from tunelab.eval.report import CURVE_PNG, REPORT_JSON, REPORT_MD
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.methods import sft
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.curve import CurveSpec, run_curve
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import bank_test_set, open_bank
from tunelab.stores.runs import RunStore

SPEC = CurveSpec(SFTArgs(epochs=1, batch_size=4, max_length=128), ks=(0, 1), selectors=("jaccard",), sizes=(4, 8), seeds=1)


@pytest.mark.heavy
@pytest.mark.slow
def test_curve_run_writes_report_and_plot_and_a_rerun_reuses_every_point(settings, conn, engine, base_pair, monkeypatch):
    result = CliRunner().invoke(cli, ["bank", "import-demo", "sentiment", "--size", "40"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bank = open_bank(conn, "sentiment")
    test_set = bank_test_set(conn, bank, limit=4)
    runner = ArmRunner(Runtime(settings, conn, engine=engine), bank)
    events = []
    try:
        first = run_curve(runner, test_set, SPEC, greedy(4), base_pair.hf_dir, events.append)
        assert len(first.trained) == 2 and first.reused_adapters == [] and first.generated == 4 * 4 and first.reused_answers == 0
        assert events[-1].answers_done == events[-1].answers_total == 16 and events[-1].adapters_done == 2
        assert any(e.phase == "training" and e.step is not None for e in events)
        assert any(e.eta is not None and e.eta.complete for e in events if e.phase == "training")
        report = json.loads((first.report_dir / REPORT_JSON).read_text())
        points = {(p["family"], p["x"]): p for p in report["curve"]["points"]}
        assert set(points) == {("zero-shot", 0), ("jaccard", 1), ("lora", 4), ("lora", 8)}
        assert len(points[("lora", 8)]["seed_values"]) == 1 and points[("lora", 8)]["train_seconds"] > 0
        assert report["baselines"]["majority_label"] in ("positive", "negative")
        markdown = (first.report_dir / REPORT_MD).read_text()
        assert "## Learning curve" in markdown and "## Baselines and errors" in markdown and "Crossover" in markdown
        assert (first.report_dir / CURVE_PNG).stat().st_size > 1000
        ids = {a.metrics["train_examples"]: set(RunStore(conn).get(str(a.run_id)).example_ids) for a in RunStore(conn).adapters()}
        assert sorted(ids) == [4, 8] and ids[4] < ids[8]  # nested subsets

        def refuse(*args, **kwargs):
            raise AssertionError("the rerun trained or generated")

        monkeypatch.setattr(sft, "train", refuse)
        monkeypatch.setattr(LlamaEngine, "chat", refuse)
        again = run_curve(runner, test_set, SPEC, greedy(4), base_pair.hf_dir)
        assert again.trained == [] and sorted(again.reused_adapters) == sorted(first.trained)
        assert again.generated == 0 and again.reused_answers == 16 and again.comparison.id == first.comparison.id
        assert json.loads((again.report_dir / REPORT_JSON).read_text())["curve"] == report["curve"]
    finally:
        runner.runtime.engine_for(None)  # the session engine goes back to the plain base for later tests
