"""Distillation: teacher arms (another model, the base with ICL) relabel inputs into a bank; the
student trained on it is compared with its teacher and the gold answers, leakage seen through.

Real components: the bundled model through llama.cpp as the ICL teacher, Gemma 3 270M (a second
GGUF) as the `model:` teacher, a real 2-step SFT student, real compare and report writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from finetune_support import base_pair  # noqa: F401

from tunelab.cli import cli
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.eval.distill_summary import distill_summary
from tunelab.eval.report import REPORT_JSON, REPORT_MD, write_report
from tunelab.eval.summary import summarize
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.compare import finish, run_comparison
from tunelab.runtime.distill import DistillProgress, DistillSpec, plan_distillation, run_distillation
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import TestSet, bank_test_set, check_leakage
from tunelab.stores.bank_files import ExampleRow, read_inputs
from tunelab.stores.banks import BankStore
from tunelab.stores.comparisons import ComparisonItem, ComparisonStore, ItemResult
from tunelab.stores.distillations import DistillationStore

REVIEWS = [
    ("a warm, funny and wise film", "positive"),
    ("dull, flat and far too long", "negative"),
    ("the best thing I have seen this year", "positive"),
    ("a tedious mess with no ideas", "negative"),
    ("charming performances and a lovely score", "positive"),
    ("the jokes land nowhere and the plot drags", "negative"),
    ("moving, smart and beautifully shot", "positive"),
    ("an ugly, boring waste of a good cast", "negative"),
    ("a delight from start to finish", "positive"),
    ("lifeless and predictable", "negative"),
]
TEACHER = Arm(None, "jaccard", 2)


def reviews_bank(conn, name: str = "reviews") -> None:
    rows = [ExampleRow(text, label, i + 1) for i, (text, label) in enumerate(REVIEWS)]
    BankStore(conn).create(name, rows, "Answer positive or negative.", test_size=0.3)


# -- arms, inputs, the report section --------------------------------------------------------------
def test_model_arms_round_trip_and_bad_ones_are_one_line_errors() -> None:
    arm = Arm.parse("model:gemma3-270m+embedding@8")
    assert (arm.model, arm.adapter, arm.selector, arm.k) == ("gemma3-270m", None, "embedding", 8)
    assert arm.name == "model:gemma3-270m+embedding@8" and Arm.parse("model:/m/big.gguf").name == "model:/m/big.gguf"
    assert Arm.parse("base+jaccard@2") == Arm(None, "jaccard", 2)  # the names stored before stay the same arms
    for bad in ("model:", "teacher:x", "model:x+bm25@2"):
        with pytest.raises(TunelabError):
            Arm.parse(bad)
    with pytest.raises(TunelabError, match="not both"):
        Arm("a", model="m")


def test_inputs_come_from_text_lines_or_a_jsonl_field(tmp_path: Path) -> None:
    text = tmp_path / "inputs.txt"
    text.write_text("first review\n\n  second review \n", encoding="utf-8")
    assert [(r.input, r.line) for r in read_inputs(text).rows] == [("first review", 1), ("second review", 3)]
    jsonl = tmp_path / "inputs.jsonl"
    jsonl.write_text('{"question": "why?"}\n{"other": 1}\nnot json\n', encoding="utf-8")
    parsed = read_inputs(jsonl)
    assert [r.input for r in parsed.rows] == ["why?"] and [line for line, _ in parsed.skipped] == [2, 3]
    with pytest.raises(TunelabError, match="no inputs"):
        read_inputs(tmp_path / "inputs.jsonl", input_field="missing")


def test_report_says_how_close_the_student_gets_to_teacher_and_gold(conn, settings) -> None:
    store = ComparisonStore(conn)
    items = [ComparisonItem(i, str(i), f"review {i}", ("negative", "positive")[i % 2]) for i in range(8)]
    arms = {"base+jaccard@2": [1, 1, 1, 1, 1, 1, 0, 0], "lora:student": [1, 1, 1, 1, 1, 0, 1, 0]}
    comparison = store.open("reviews", "k", {"test_source": "constructed", "labels": ["negative", "positive"]}, items, list(arms))
    for arm, hits in arms.items():
        for item, hit in zip(items, hits):
            wrong = "positive" if item.reference == "negative" else "negative"
            output = item.reference if hit else wrong
            scores = {"accuracy": float(hit), "chrf": float(hit), "rouge_l": float(hit)}
            store.add_result(comparison.id, "fp", ItemResult(arm, item.position, output, scores, 30, 2, 10.0, 20.0, 50.0, "stop"))
    summary = summarize(store.get(comparison.id), items, store.results(comparison.id), "accuracy")
    summary.distillation = distill_summary(summary, [("lora:student", "base+jaccard@2")], ("negative", "positive"))
    (pair,) = summary.distillation.pairs
    assert pair.agreement.value == pytest.approx(6 / 8)  # they differ on items 5 and 6
    assert pair.agreement.low < 0.75 < pair.agreement.high and pair.gap.value == pytest.approx(0.0)
    path = write_report(settings, summary)
    markdown = (path / REPORT_MD).read_text()
    assert "## Distillation" in markdown and "| lora:student | base+jaccard@2 | 75.0% [" in markdown
    assert json.loads((path / REPORT_JSON).read_text())["distillation"]["pairs"][0]["teacher"] == "base+jaccard@2"


# -- an ICL teacher on the bundled model -----------------------------------------------------------
def test_icl_teacher_relabels_train_inputs_never_showing_their_own_answer_and_resumes(settings, conn, engine) -> None:
    reviews_bank(conn)
    runtime = Runtime(settings, conn, engine=engine)
    spec = DistillSpec("reviews-distilled", TEACHER, from_bank="reviews", max_tokens=3)
    source = BankStore(conn)
    train, test = source.examples("reviews", "train"), source.examples("reviews", "test")

    def stop_after_two(event: DistillProgress) -> None:
        if event.generated == 2:
            raise KeyboardInterrupt

    plan = plan_distillation(runtime, spec)
    assert plan.exclude_own and plan.stored == 0 and len(plan.inputs) == len(train)
    with pytest.raises(KeyboardInterrupt):
        run_distillation(plan, stop_after_two)
    again = plan_distillation(runtime, spec)
    assert again.job.id == plan.job.id and again.stored == 2  # the same job, two answers kept
    events: list[DistillProgress] = []
    result = run_distillation(again, events.append)
    assert (result.generated, result.reused, result.cancelled) == (len(train) - 2, 2, False)
    assert events[-1].done == len(train) and events[-1].eta_s == 0.0
    assert result.job.status == "done" and result.job.teacher == "base+jaccard@2" and result.job.context_bank == "reviews"

    bank = result.bank
    assert (bank.n_train, bank.n_test) == (len(train), 0)  # every answer is training data; evaluation is on the source
    assert bank.instruction == "Answer positive or negative."
    distilled = source.examples(bank.name)
    assert {e.input for e in distilled} == {e.input for e in train} and not {e.input for e in distilled} & {e.input for e in test}
    by_input = {e.input: e.id for e in train}
    records = DistillationStore(conn).provenance(result.job.id)
    assert len(records) == len(train)
    for record, example in zip(records, train):
        assert record["arm"] == "base+jaccard@2" and record["model_sha256"] == runtime.model_sha256 and record["seed"] == 0
        shown = record["icl"]["examples"]
        assert len(shown) == 2 and by_input[example.input] not in {e["id"] for e in shown}
        assert example.input not in {e["input"] for e in shown}
    origins = DistillationStore(conn).origins({e.id for e in distilled})
    assert sorted(o.source_example_id for o in origins) == sorted(e.id for e in train)

    rerun = run_distillation(plan_distillation(runtime, spec))
    assert (rerun.generated, rerun.reused) == (0, len(train))


def test_bad_distillations_are_one_line_errors_and_write_nothing(settings, conn) -> None:
    reviews_bank(conn)
    runner = CliRunner()
    cases = [
        (["bank", "distill", "d", "--teacher", "gpt4", "--from-bank", "reviews"], "bad arm"),
        (["bank", "distill", "d", "--teacher", "base"], "--inputs FILE or --from-bank"),
        (["bank", "distill", "d", "--teacher", "model:nowhere.gguf", "--from-bank", "reviews"], "nowhere.gguf"),
        (["bank", "distill", "reviews", "--teacher", "base", "--from-bank", "reviews"], "new bank"),
        (["bank", "distill", "d", "--teacher", "base+jaccard@2", "--inputs", __file__], "give the bank"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output
    assert BankStore(conn).names() == ["reviews"]


# -- a second GGUF as the teacher, through the CLI ------------------------------------------------
@pytest.mark.slow
def test_cli_distills_a_file_with_a_second_model_as_teacher(settings, conn, tmp_path: Path) -> None:
    from tunelab.stores.model_files import PACKAGED_MODELS

    gemma = next(p for p in PACKAGED_MODELS if p.name == "gemma3-270m")
    inputs = tmp_path / "questions.txt"
    inputs.write_text("What colour is the sky?\nWhat do bees make?\nWhere do fish live?\n", encoding="utf-8")
    args = ["bank", "distill", "facts", "--teacher", "model:gemma3-270m", "--inputs", str(inputs), "--instruction", "Answer briefly."]
    result = CliRunner().invoke(cli, [*args, "--max-tokens", "4", "--n-ctx", "512"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "bank 'facts': 3 new answer(s)" in result.stdout and "distilling 3 input(s)" in result.stderr
    (job,) = DistillationStore(conn).list("facts")
    records = DistillationStore(conn).provenance(job.id)
    assert {Path(r["model_path"]) for r in records} == {gemma.locate()} and all(r["arm"] == "model:gemma3-270m" for r in records)
    examples = BankStore(conn).examples("facts")
    assert [e.input for e in examples] == ["What colour is the sky?", "What do bees make?", "Where do fish live?"]
    assert all(e.split == "train" for e in examples) and BankStore(conn).get("facts").instruction == "Answer briefly."


# -- the student beside its teacher in one grid ----------------------------------------------------
@pytest.mark.slow
def test_student_teacher_and_second_model_in_one_grid_and_leakage_through_the_distilled_bank(settings, conn, engine, base_pair) -> None:
    from tunelab.finetune.args import SFTArgs
    from tunelab.finetune.methods import sft

    reviews_bank(conn)
    runtime = Runtime(settings, conn, engine=engine)
    run_distillation(plan_distillation(runtime, DistillSpec("reviews-d", TEACHER, from_bank="reviews", max_tokens=3)))
    args = SFTArgs(max_steps=2, batch_size=4, max_length=64, save_steps=100, lora_r=4)
    student = sft.train(sft.prepare(settings, conn, "student", "reviews-d", args, hf_dir=base_pair.hf_dir)).adapter
    assert student is not None

    bank = BankStore(conn).get("reviews")
    runner = ArmRunner(runtime, bank)
    test_set = bank_test_set(conn, bank)
    arms = [Arm(), TEACHER, Arm("student"), Arm(model="gemma3-270m")]
    comparison = run_comparison(runner, test_set, arms, greedy(3))
    runner.close()
    _, path = finish(settings, conn, comparison.id, bank.labels)
    report = json.loads((path / REPORT_JSON).read_text())
    assert [a["arm"] for a in report["arms"]] == ["base", "base+jaccard@2", "lora:student", "model:gemma3-270m"]
    (pair,) = report["distillation"]["pairs"]
    assert (pair["student"], pair["teacher"], pair["n"]) == ("lora:student", "base+jaccard@2", len(test_set.items))
    assert 0.0 <= pair["agreement"]["low"] <= pair["agreement"]["value"] <= pair["agreement"]["high"] <= 1.0
    gemma = {item["outputs"]["model:gemma3-270m"]["provenance"]["model_path"] for item in report["items"]}
    assert len(gemma) == 1 and "gemma" in gemma.pop()
    assert "## Distillation" in (path / REPORT_MD).read_text()

    # the student saw the source's train inputs: scoring it on them is refused, through the distilled bank
    BankStore(conn).create("other", [ExampleRow("fine", "positive", 1), ExampleRow("bad", "negative", 2)], test_size=0.0)
    train = BankStore(conn).examples("reviews", "train")
    leaky = TestSet("other", [ComparisonItem(i, str(e.id), e.input, e.output) for i, e in enumerate(train)], "constructed")
    with pytest.raises(TunelabError, match="distilled bank"):
        check_leakage(ArmRunner(runtime, BankStore(conn).get("other")), leaky, [Arm("student")])
    check_leakage(runner, test_set, [Arm("student")])  # the source's own test split is fine
