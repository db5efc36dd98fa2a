"""Decomposition arms (`+plan`, `+extract`) on the bundled model: the arm grammar, the plan's format
check and repair, chunked extraction of an input longer than n_ctx, resume after a Ctrl-C between
an item's steps, and the report's cost columns."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from compare_support import base_pair, sentiment_bank  # noqa: F401

from tunelab.cli import cli
from tunelab.engine.context import prompt_budget
from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm
from tunelab.eval.report import REPORT_MD
from tunelab.icl.prompt import task_messages
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.compare import finish, run_comparison
from tunelab.runtime.decompose import NOTE_TOKENS, Decomposer, parse_plan
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import bank_test_set
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
    test_set = bank_test_set(conn, sentiment_bank, limit=1)
    (item,) = test_set.items
    arm = Arm(steps="plan")
    calls: list[str] = []

    def interrupt_after_the_second_call(step) -> None:
        calls.append(step.kind)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_comparison(runner, test_set, [arm], greedy(6), on_step=interrupt_after_the_second_call)
    store = ComparisonStore(conn)
    (comparison,) = store.list()
    assert calls[0] == "plan" and store.results(comparison.id) == []  # nothing of the half-done item

    events = []
    run_comparison(runner, test_set, [arm], greedy(6), events.append)
    assert [(e.position, e.reused) for e in events] == [(0, False)]
    (result,) = store.results(comparison.id)
    steps = Provenance.from_dict(result.provenance).steps
    assert [s.kind for s in steps][:2] == calls  # the rerun worked the item through from its first call
    assert steps[0].kind == "plan" and steps[-1].kind == "step" and all(s.prompt_tokens > 0 for s in steps)
    final_turn = result.provenance["prompt_messages"][-1]["content"]
    assert final_turn.startswith("Work done step by step:\n1. ") and final_turn.endswith(item.input)
    assert result.output and result.completion_tokens > 0 and set(result.scores) == {"accuracy", "chrf", "rouge_l"}


def test_longdoc_demo_is_seeded_and_plants_one_answer_among_distractors(conn) -> None:
    bank = longdoc(size=3, seed=7, words=300)
    assert bank.rows == longdoc(size=3, seed=7, words=300).rows != longdoc(size=3, seed=8, words=300).rows
    for row in bank.rows:
        document, question = row.input.rsplit("\n\n", 1)
        vault = re.fullmatch(r"Question: what is the code of the (\w+) vault\?", question).group(1)
        assert f"The code of the {vault} vault is {row.output}." in document
        assert len(re.findall(r"\b\d{4}\b", document)) == 3 and len(document.split()) >= 300
    result = CliRunner().invoke(cli, ["bank", "import-demo", "longdoc", "--size", "10"])
    assert result.exit_code == 0, result.output
    assert BankStore(conn).get("longdoc").n_train == 8


@pytest.fixture(scope="module")
def short_context_engine(bundled_model):
    """The bundled model with a 512-token window: an input past it costs a few chunks, not minutes."""
    from conftest import THREADS

    from tunelab.engine.llama_engine import LlamaEngine

    engine = LlamaEngine(bundled_model, n_ctx=512, n_threads=THREADS)
    yield engine
    engine.close()


def test_extract_reads_an_input_longer_than_n_ctx_in_chunks(settings, conn, short_context_engine) -> None:
    engine = short_context_engine
    bank = longdoc(size=4, words=600)
    BankStore(conn).create(bank.name, bank.rows, bank.instruction, 0.5, 0, source=bank.source)
    stored = BankStore(conn).get(bank.name)
    test_set = bank_test_set(conn, stored, limit=1)
    (item,) = test_set.items
    whole = engine.count_tokens(task_messages(bank.instruction, item.input))
    assert whole > engine.n_ctx  # a plain arm cannot even send it

    runner = ArmRunner(Runtime(settings, conn, engine=engine), stored)
    (result,) = ComparisonStore(conn).results(run_comparison(runner, test_set, [Arm(steps="extract")], greedy(8)).id)
    steps = Provenance.from_dict(result.provenance).steps
    assert {s.kind for s in steps} == {"extract"} and len(steps) >= 2
    assert all(s.prompt_tokens <= prompt_budget(engine.n_ctx, NOTE_TOKENS) and s.completion_tokens <= NOTE_TOKENS for s in steps)
    question = item.input.rsplit("\n\n", 1)[1]
    assert all(question in s.messages[-1]["content"] for s in steps)  # every chunk is read with the question
    chunks = [re.split(r"Part \d+ of \d+:\n", s.messages[-1]["content"])[1] for s in steps]
    assert " ".join(chunks).split() == item.input.rsplit("\n\n", 1)[0].split()  # every word read once, in order
    final_turn = result.provenance["prompt_messages"][-1]["content"]
    assert final_turn.startswith("Notes from the input:\n") and final_turn.endswith(question)
    assert result.prompt_tokens < engine.n_ctx and result.output


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


@pytest.mark.slow
def test_a_decomposition_call_through_a_server_matches_llama_cpp_here(engine, bundled_model, tmp_path) -> None:
    """The decomposer only speaks `ChatEngine`: its repair call over HTTP is the same greedy call."""
    from server_support import llama_cpp_server

    from tunelab.engine.remote import RemoteEngine

    bad = "I would read it and then decide."
    here = Decomposer(engine, "Classify the review.", greedy(8))
    steps_here = here.checked_plan(bad)
    with llama_cpp_server([{"model": str(bundled_model), "model_alias": "smollm2"}], tmp_path) as (url, _):
        remote = RemoteEngine(url, n_ctx=2048)
        there = Decomposer(remote, "Classify the review.", greedy(8))
        assert there.checked_plan(bad) == steps_here
        remote.close()
    ((call_here,), (call_there,)) = here.steps, there.steps
    assert call_there.kind == call_here.kind == "repair" and call_there.output == call_here.output
    assert (call_there.prompt_tokens, call_there.completion_tokens) == (call_here.prompt_tokens, call_here.completion_tokens)


def test_chat_plan_then_answer_keeps_every_call_and_the_plain_prompt_in_the_history(settings, conn, engine) -> None:
    from tunelab.runtime.chat_service import ChatService
    from tunelab.stores.conversations import ConversationStore

    prompt = "Is 17 a prime number? Answer yes or no."
    turn = ChatService(Runtime(settings, conn, engine=engine)).send(
        None, prompt, greedy(8), system="You answer maths questions.", plan=True
    )
    message = turn.save()
    steps = turn.provenance.steps
    assert steps[0].kind == "plan" and {s.kind for s in steps[1:]} <= {"repair", "step"} and len(steps) >= 2
    assert all(s.prompt_tokens > 0 and s.completion_tokens > 0 for s in steps)
    final_turn = turn.reply.messages[-1].content
    assert final_turn.startswith("Work done step by step:\n1. ") and final_turn.endswith(prompt)
    assert turn.reply.messages[0].content == "You answer maths questions."  # the plan served the conversation's system prompt
    stored = ConversationStore(conn).messages(message.conversation_id)
    assert [m.role for m in stored] == ["user", "assistant"] and stored[0].content == prompt  # the work is not history
    assert [s["kind"] for s in stored[1].provenance["steps"]] == [s.kind for s in steps]
    assert stored[1].provenance["prompt_messages"][-1]["content"] == final_turn  # the prompt as sent is kept


async def test_chat_plan_from_the_cli_and_the_tui_shows_the_steps_folded_above_the_answer(settings, conn) -> None:
    import json

    from textual.widgets import Checkbox, Collapsible

    from tunelab.tui.app import TunelabApp
    from tunelab.tui.widgets.chat.message_view import MessageView

    result = CliRunner().invoke(cli, ["chat", "--plan", "--json", "--temperature", "0", "--max-tokens", "8", "Name a colour."])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["steps"][0]["kind"] == "plan" and "[plan] " in result.stderr

    app = TunelabApp(settings, conn)
    async with app.run_test(size=(110, 40)) as pilot:
        app.screen.query_one("#plan-on", Checkbox).value = True
        app.screen.query_one("#prompt").focus()
        for key in "Hi":
            await pilot.press(key)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        reply = list(app.screen.query(MessageView))[-1]
        (folded,) = reply.query(Collapsible)
        assert folded.collapsed and "calls" in folded.title and reply.message is not None
        assert len(reply.message.provenance["steps"]) >= 2
