"""Few-shot prompt assembly on the real model's chat template, and ICL chat turns with provenance."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tunelab.cli import cli
from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.sampling import SamplerParams
from tunelab.icl.prompt import build_icl_messages
from tunelab.icl.selectors import Selected
from tunelab.runtime.chat_service import ChatService, IclRequest
from tunelab.runtime.runtime import Runtime
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore
from tunelab.stores.feedback import prompt_as_sent

GREEDY = SamplerParams(temperature=0, max_tokens=6)
PICKS = [
    Selected(1, "best input", "best output", 0.9),
    Selected(2, "second input", "second output", 0.5),
    Selected(3, "third input", "third output", 0.1),
]


@pytest.fixture
def bank(conn):
    rows = [
        ExampleRow(f"Review: {text}", label, 0)
        for text, label in [
            ("loved it", "positive"),
            ("hated it", "negative"),
            ("a joy", "positive"),
            ("a bore", "negative"),
            ("wonderful cast", "positive"),
            ("dreadful plot", "negative"),
        ]
    ]
    return BankStore(conn).create("tiny", rows, instruction="Answer positive or negative.", test_size=0.0).bank


def test_order_is_system_then_history_then_examples_most_relevant_last(engine, bank) -> None:
    history = [ChatMessage("system", "You are terse."), ChatMessage("user", "hi"), ChatMessage("assistant", "hello")]
    prompt = build_icl_messages(engine, bank, PICKS, "the query", 64, history)
    assert [m.content for m in prompt.messages] == [
        "You are terse.\n\nAnswer positive or negative.",
        "hi",
        "hello",
        "third input",
        "third output",
        "second input",
        "second output",
        "best input",
        "best output",
        "the query",
    ]
    assert [m.role for m in prompt.messages[3:]] == ["user", "assistant"] * 3 + ["user"]
    assert prompt.dropped == 0 and prompt.example_tokens > 0
    rendered = engine.template.render(prompt.messages)
    assert rendered.startswith("<|im_start|>system\nYou are terse.") and "<|im_start|>assistant\nbest output<|im_end|>" in rendered


def test_examples_that_do_not_fit_are_dropped_and_the_most_relevant_kept(engine, bank) -> None:
    huge = Selected(9, "word " * 3000, "out", 0.95)  # longer than the whole 2048-token context on its own
    prompt = build_icl_messages(engine, bank, [huge, *PICKS], "q", 256)
    assert [e.id for e in prompt.used] == [1, 2, 3] and prompt.dropped == 1
    assert engine.count_tokens(prompt.messages) <= engine.n_ctx - 256
    medium = [Selected(i, f"{i} " + "word " * 700, "out", 1 - i / 10) for i in range(1, 4)]  # two fit, three don't
    fitted = build_icl_messages(engine, bank, medium, "q", 256)
    assert [e.id for e in fitted.used] == [1, 2] and fitted.dropped == 1


def test_fixed_prefix_is_stable_across_queries(engine, bank) -> None:
    """The system part renders identically for any query, so llama.cpp can reuse its KV cache."""
    one = engine.template.tokens(build_icl_messages(engine, bank, PICKS[:1], "first query", 16).messages)
    two = engine.template.tokens(build_icl_messages(engine, bank, PICKS[1:2], "another", 16).messages)
    block = f"<|im_start|>system\n{bank.instruction}<|im_end|>\n"  # SmolLM2's ChatML system turn
    system = engine.llama.tokenize(block.encode(), add_bos=False, special=True)
    shared = next(i for i, (a, b) in enumerate(zip(one, two)) if a != b)
    assert shared >= len(system) and one[: len(system)] == system


def test_icl_turn_stores_selector_examples_and_prompt_as_sent(settings, conn, engine, bank) -> None:
    service = ChatService(Runtime(settings, conn, engine=engine))  # the session's loaded model
    conv = service.store.create("icl")
    turn = service.send(conv.id, "Review: what a joy, loved the cast", GREEDY, IclRequest("tiny", "jaccard", 2))
    turn.reply.text()
    message = turn.save()
    icl = message.provenance["icl"]
    assert icl["bank"] == "tiny" and icl["selector"] == "jaccard" and icl["k"] == 2 and len(icl["examples"]) == 2
    assert icl["examples"][0]["score"] >= icl["examples"][1]["score"] > 0
    assert icl["example_tokens"] > 0 and message.prompt_tokens > icl["example_tokens"]
    sent = prompt_as_sent(service.store, message)
    assert sent[0]["content"] == "Answer positive or negative." and sent[-1]["content"].startswith("Review: what a joy")
    assert len(sent) == 1 + 2 * 2 + 1

    again = service.regenerate(conv.id, GREEDY, IclRequest("tiny", "random", 3))
    again.reply.text()
    regenerated = again.save()
    assert regenerated.provenance["icl"]["selector"] == "random" and len(service.store.messages(conv.id)) == 2


def test_chat_cli_with_bank_shows_examples_and_records_them(conn, bank) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "chat",
            "--bank",
            "tiny",
            "--selector",
            "jaccard",
            "--k",
            "2",
            "--show-examples",
            "--json",
            "--temperature",
            "0",
            "--max-tokens",
            "4",
            "--n-ctx",
            "1024",
            "Review: a dreadful plot and a bore",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert [e["input"] for e in record["icl"]["examples"]] == ["Review: a bore", "Review: dreadful plot"]
    assert "2 example(s) from tiny by jaccard" in result.stderr and "1. #" in result.stderr
    bad = CliRunner().invoke(cli, ["chat", "--bank", "tiny", "--k", "0", "hi"])
    assert bad.exit_code == 1 and bad.output.strip() == "error: k must be at least 1 (got 0); use no selector for zero-shot"
