"""The one runtime: one model load per process, one provenance shape, one prompt format."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import fields

from finetune_support import base_pair  # noqa: F401
from test_tui_compare import mini_bank, type_text

from tunelab.eval.arms import Arm
from tunelab.runtime import arena
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.chat_service import ChatService
from tunelab.runtime.runtime import Runtime
from tunelab.stores.banks import BankStore
from tunelab.stores.conversations import ConversationStore
from tunelab.stores.feedback import FeedbackStore
from tunelab.stores.migrations import m0011_typed_provenance
from tunelab.stores.provenance import Provenance
from tunelab.tui.app import TunelabApp
from tunelab.tui.screens.compare import CompareScreen

FIELDS = {f.name for f in fields(Provenance)}


async def test_the_app_chats_then_f3_runs_an_arm_on_the_model_it_loaded_once(settings, conn) -> None:
    mini_bank(conn)
    app = TunelabApp(settings, conn)
    async with app.run_test(size=(120, 34)) as pilot:
        await type_text(pilot, "Hi")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.runtime.loads == 1
        await pilot.press("f3")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        screen.query_one("#compare-arms").value = "base, base+jaccard@2"
        screen.query_one("#compare-prompt").focus()
        await type_text(pilot, "review: great film")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.round is not None and len(screen.round.replies) == 2
        assert app.runtime.loads == 1  # llama.cpp loaded the model once for the chat and both arms


def test_chat_compare_and_arena_store_provenance_with_the_same_fields(settings, conn, engine) -> None:
    mini_bank(conn)
    runtime = Runtime(settings, conn, engine=engine)
    prompt = "review: a great film"
    chat = ChatService(runtime)
    turn = chat.send(None, prompt, greedy(8, seed=5))
    turn.reply.text()
    chat_record = turn.save().provenance

    runner = ArmRunner(runtime, runtime.bank("mini"))
    arm_reply = runner.start(Arm(None, "jaccard", 2), prompt, greedy(8))
    arm_reply.reply.text()
    compare_record = arm_reply.provenance.to_dict()

    round_ = arena.new_round(prompt, [Arm(), Arm(None, "jaccard", 2)], blind=False, rng=random.Random(0), bank="mini")
    for column, arm in enumerate(round_.arms):
        round_.replies[column] = runner.start(arm, prompt, greedy(8))
        round_.replies[column].reply.text()
    arena.rate_column(conn, round_, 1, "up")
    (rating,) = FeedbackStore(conn).ratings()

    assert set(chat_record) == set(compare_record) == set(rating.snapshot.provenance) == FIELDS
    assert chat_record["seed"] == 5 and chat_record["model_sha256"] == compare_record["model_sha256"] == runtime.model_sha256
    assert compare_record["icl"]["selector"] == "jaccard" and len(compare_record["icl"]["examples"]) == 2
    assert rating.snapshot.provenance["arm"] == "base+jaccard@2" and rating.snapshot.provenance["icl"]["k"] == 2
    assert chat_record["icl"] is None and chat_record["arm"] is None


def test_rows_stored_before_the_typed_record_are_migrated_to_it(conn) -> None:
    """Chat rows kept model fields in columns and only `icl` in JSON; compare rows were flat."""
    conversations = ConversationStore(conn)
    conv = conversations.create("old")
    conversations.add_user(conv.id, "hello")
    old_chat = {
        "icl": {
            "bank": "b",
            "selector": "jaccard",
            "k": 1,
            "dropped": 0,
            "example_tokens": 9,
            "examples": [{"id": 3, "score": 0.5, "input": "i", "output": "o"}],
        },
        "prompt_messages": [{"role": "user", "content": "hello"}],
    }
    conn.execute(
        "INSERT INTO messages (conversation_id, role, content, created_at, model_path, model_sha256, adapter, params_json, seed,"
        " provenance_json) VALUES (?, 'assistant', 'hi', '2026-01-01', 'm.gguf', 'abc', NULL, ?, 7, ?)",
        (conv.id, json.dumps({"temperature": 0.7, "seed": 7}), json.dumps(old_chat)),
    )
    conn.execute(
        "INSERT INTO comparisons (id, bank, config_key, config_json, arms_json, status, created_at, updated_at)"
        " VALUES (1, 'b', 'f', '{}', '[\"base+jaccard@1\"]', 'done', '2026-01-01', '2026-01-01')"
    )
    conn.execute("INSERT INTO comparison_items (comparison_id, position, item_key, input, reference) VALUES (1, 0, '1', 'x', 'y')")
    old_compare = {
        "arm": "base+jaccard@1",
        "model_path": "m.gguf",
        "model_sha256": "abc",
        "adapter": None,
        "adapter_sha256": None,
        "selector": "jaccard",
        "k": 1,
        "example_ids": [3],
        "example_scores": [0.5],
        "dropped_examples": 0,
        "params": {"temperature": 0.0, "seed": 0},
        "seed": 0,
        "selection_ms": 1.5,
    }
    conn.execute(
        "INSERT INTO comparison_results (comparison_id, arm, position, arm_fingerprint, output, scores_json, prompt_tokens,"
        " completion_tokens, total_ms, finish_reason, provenance_json, created_at)"
        " VALUES (1, 'base+jaccard@1', 0, 'k', 'y', '{}', 5, 1, 3.0, 'stop', ?, '2026-01-01')",
        (json.dumps(old_compare),),
    )

    m0011_typed_provenance.migrate(conn)

    chat = json.loads(conn.execute("SELECT provenance_json FROM messages WHERE role = 'assistant'").fetchone()[0])
    compare = json.loads(conn.execute("SELECT provenance_json FROM comparison_results").fetchone()[0])
    assert set(chat) == set(compare) == FIELDS
    assert (chat["model_path"], chat["seed"], chat["icl"]["examples"][0]["id"]) == ("m.gguf", 7, 3)
    assert compare["icl"] == {
        "bank": "",
        "selector": "jaccard",
        "k": 1,
        "dropped": 0,
        "example_tokens": 0,
        "selection_ms": 1.5,
        "examples": [{"id": 3, "score": 0.5, "input": "", "output": ""}],
        # written before the example cache existed: exact prompts
        "cached": False,
        "cached_tokens": 0,
        "recomputed_tokens": 0,
    }
    assert Provenance.from_dict(compare).example_ids == [3] and compare["arm"] == "base+jaccard@1"


def test_the_trainer_sees_the_tokens_compare_sends_before_the_answer(settings, conn, engine, base_pair) -> None:
    """For a bank example, SFT's prompt tokens (trl tokenises the prompt with the generation prompt,
    then trains on what follows) equal the tokens llama.cpp is sent for the zero-shot arm."""
    from tunelab.finetune.methods import sft

    mini_bank(conn)
    ids, rows = sft.training_rows(conn, "mini")
    example = next(e for e in BankStore(conn).examples("mini", split="train") if e.id == ids[0])
    tokenizer = base_pair.tokenizer()
    trainer_prompt = tokenizer.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    trainer_full = tokenizer.apply_chat_template(rows[0]["prompt"] + rows[0]["completion"], tokenize=True, return_dict=True)["input_ids"]
    assert trainer_full[: len(trainer_prompt)] == trainer_prompt  # trl trains on exactly what follows these tokens

    arm_reply = ArmRunner(Runtime(settings, conn, engine=engine), BankStore(conn).get("mini")).start(Arm(), example.input, greedy(4))
    arm_reply.reply.text()
    sent = engine.template.tokens(arm_reply.reply.messages)
    assert sent == list(trainer_prompt), (tokenizer.decode(trainer_prompt), tokenizer.decode(sent))
    assert arm_reply.provenance.prompt_messages == rows[0]["prompt"]


async def test_switching_model_in_the_tui_reloads_once_and_says_so(settings, conn, bundled_model, tmp_path) -> None:
    copy = tmp_path / "other.gguf"
    shutil.copyfile(bundled_model, copy)  # another file: the runtime must load it
    app = TunelabApp(settings, conn)
    async with app.run_test(size=(120, 34)) as pilot:
        screen = app.screen
        for model, loads, said in ((str(bundled_model), 1, "loaded"), (str(bundled_model), 1, "already serving"), (str(copy), 2, "loaded")):
            screen.switch_model(model)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.runtime.loads == loads
            assert said in [n.message for n in app._notifications][-1]
        assert screen.sub_title == "other.gguf" and app.runtime.engine.model_path == copy
        screen.switch_model(str(tmp_path / "missing.gguf"))
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.runtime.loads == 2 and app.runtime.engine.model_path == copy  # a bad path changes nothing
