"""Decomposition arms (`+plan`, `+extract`) on the bundled model: the arm grammar, the plan's format
check and repair, chunked extraction of an input longer than n_ctx, resume after a Ctrl-C between
an item's steps, and the report's cost columns."""

from __future__ import annotations

import pytest
from compare_support import base_pair, sentiment_bank  # noqa: F401

from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.eval.report import REPORT_MD
from tunelab.icl.prompt import task_messages
from tunelab.runtime.compare import ArmRunner, bank_test_set, finish, greedy, run_comparison
from tunelab.runtime.decompose import CHUNK_TOKENS, NOTE_TOKENS, Decomposer, parse_plan
from tunelab.runtime.runtime import Runtime
from tunelab.stores.banks import BankStore
from tunelab.stores.comparisons import ComparisonItem, ComparisonStore, ItemResult
from tunelab.stores.demo_banks import longdoc
from tunelab.stores.provenance import Provenance


def test_arm_names_with_steps_round_trip() -> None:
    for name in ("base+plan", "base+jaccard@4+plan", "lora:sst+extract", "model:teacher+mmr@2+extract"):
        assert Arm.parse(name).name == name
    assert Arm.parse("base+jaccard@4+plan") == Arm(None, "jaccard", 4, steps="plan")
    for bad in ("base+plan+jaccard@2", "base+think"):
        with pytest.raises(TunelabError, match="bad arm"):
            Arm.parse(bad)


def test_parse_plan_accepts_only_numbered_steps_1_to_n() -> None:
    assert parse_plan("1. Read the review.\n2) Decide the label.\n") == ["Read the review.", "Decide the label."]
    assert parse_plan("Plan:\n1. Read.") is None  # a preface line
    assert parse_plan("1. Read.\n3. Answer.") is None  # numbering skips
    assert parse_plan("\n".join(f"{i}. step" for i in range(1, 6))) is None  # over MAX_STEPS
    assert parse_plan("") is None


def test_a_bad_plan_is_repaired_once_and_else_becomes_the_instruction(engine) -> None:
    decomposer = Decomposer(engine, "Classify the review.", greedy(8))
    assert decomposer.checked_plan("1. Read it.\n2. Label it.") == ["Read it.", "Label it."] and decomposer.steps == []
    bad = "Sure! Here is what I would do:\n- read the review\n- pick a label"
    steps = decomposer.checked_plan(bad)
    (repair,) = decomposer.steps
    assert repair.kind == "repair" and bad in repair.messages[-1]["content"]
    assert repair.prompt_tokens > 0 and repair.completion_tokens > 0
    assert steps == (parse_plan(repair.output) or ["Classify the review."])


def test_plan_arm_resumes_after_a_ctrl_c_between_steps_and_stores_every_call(settings, conn, engine, sentiment_bank) -> None:
    runner = ArmRunner(Runtime(settings, conn, engine=engine), sentiment_bank)
    test_set = bank_test_set(conn, sentiment_bank, limit=2)
    arm = Arm(steps="plan")
    calls: list[str] = []

    def interrupt_in_item_two(step) -> None:
        calls.append(step.kind)
        if calls.count("plan") == 2 and len(calls) > calls.index("plan", 1) + 1:  # item two, after its second call
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_comparison(runner, test_set, [arm], greedy(6), on_step=interrupt_in_item_two)
    store = ComparisonStore(conn)
    (comparison,) = store.list()
    assert {r.position for r in store.results(comparison.id)} == {0}  # nothing of the half-done item

    events = []
    run_comparison(runner, test_set, [arm], greedy(6), events.append)
    assert [e.reused for e in events] == [True, False]
    for result, item in zip(store.results(comparison.id), test_set.items):
        steps = Provenance.from_dict(result.provenance).steps
        assert steps[0].kind == "plan" and steps[-1].kind == "step" and all(s.output for s in steps)
        assert all(s.prompt_tokens > 0 for s in steps)
        final_turn = result.provenance["prompt_messages"][-1]["content"]
        assert final_turn.startswith("Work done step by step:\n1. ") and final_turn.endswith(item.input)
        assert result.output and result.completion_tokens > 0 and set(result.scores) == {"accuracy", "chrf", "rouge_l"}


def test_extract_reads_an_input_longer_than_n_ctx_in_chunks(settings, conn, engine) -> None:
    bank = longdoc(size=4, words=2200)
    BankStore(conn).create(bank.name, bank.rows, bank.instruction, 0.5, 0, source=bank.source)
    stored = BankStore(conn).get(bank.name)
    item = bank_test_set(conn, stored, limit=1).items[0]
    runner = ArmRunner(Runtime(settings, conn, engine=engine), stored)
    whole = engine.count_tokens(task_messages(bank.instruction, item.input))
    assert whole > engine.n_ctx  # plain arms cannot even send it

    result = ComparisonStore(conn).results(
        run_comparison(runner, bank_test_set(conn, stored, limit=1), [Arm(steps="extract")], greedy(8)).id
    )[0]
    steps = Provenance.from_dict(result.provenance).steps
    assert {s.kind for s in steps} == {"extract"} and len(steps) >= whole // CHUNK_TOKENS
    assert all(s.prompt_tokens <= CHUNK_TOKENS + 200 and s.completion_tokens <= NOTE_TOKENS for s in steps)
    question = item.input.rsplit("\n\n", 1)[1]
    assert all(question in s.messages[-1]["content"] for s in steps)  # every chunk is read with the question
    final_turn = result.provenance["prompt_messages"][-1]["content"]
    assert final_turn.startswith("Notes from the input:\n") and final_turn.endswith(question)
    assert result.prompt_tokens < engine.n_ctx // 2 and result.output


def _result(arm: str, position: int, steps: list[dict]) -> ItemResult:
    return ItemResult(
        arm, position, "4242", {"accuracy": 1.0, "chrf": 1.0, "rouge_l": 1.0}, 100, 5, 10.0, 50.0, None, "stop", provenance={"steps": steps}
    )


def test_report_shows_calls_and_tokens_across_all_calls(settings, conn) -> None:
    store = ComparisonStore(conn)
    items = [ComparisonItem(0, "1", "q0", "4242"), ComparisonItem(1, "2", "q1", "4242")]
    comparison = store.open("b", "fp", {"instruction": "", "labels": []}, items, ["base", "base+plan"])
    step = {"kind": "step", "messages": [], "output": "x", "prompt_tokens": 300, "completion_tokens": 20, "total_ms": 1000.0}
    for position in (0, 1):
        store.add_result(comparison.id, "a", _result("base", position, []))
        store.add_result(comparison.id, "a", _result("base+plan", position, [step, step] if position else [step]))
    _, path = finish(settings, conn, comparison.id, [])
    table = {
        line.split(" | ")[0].strip("| "): line
        for line in (path / REPORT_MD).read_text().splitlines()
        if line.startswith("| base") and line.count("|") == 13
    }
    # base: 1 call, 105 tokens, 0.1 s; plan: (2 + 3) / 2 calls, 105 + (320 + 640) / 2 = 585 tokens, 0.1 + 3 s
    assert table["base"].endswith("| 1.0 | 105 | 0.1 |")
    assert table["base+plan"].endswith("| 2.5 | 585 | 3.1 |")
