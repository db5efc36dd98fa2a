"""The token view on the real llama.cpp tokenizer: pieces, split CJK characters, a stored ICL prompt's parts,
the `tunelab tokens` command and the chat screen's modal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunelab.engine.sampling import SamplerParams
from tunelab.runtime.chat_service import ChatService, IclRequest
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.tokens import pieces, prompt_view, text_pieces, tokenize
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore

CJK = "東京は日本の首都です。我喜欢学习中文。"
GREEDY = SamplerParams(temperature=0, max_tokens=8)


def test_text_pieces_are_whole_characters_with_every_token_counted(engine):
    ids = tokenize(engine.llama, CJK)
    found = text_pieces(engine.llama, CJK)
    assert "".join(p.text for p in found) == CJK  # nothing lost, nothing garbled
    assert not any("\ufffd" in p.text or "\\x" in p.text for p in found)
    assert [i for p in found for i in p.ids] == ids
    assert any(len(p.ids) > 1 for p in found), "SmolLM2's byte-level BPE splits some CJK characters over tokens"


def test_bytes_cut_mid_character_show_as_escapes(engine):
    ids = tokenize(engine.llama, CJK)
    split = next(p for p in text_pieces(engine.llama, CJK) if len(p.ids) > 1)
    start = ids.index(split.ids[0])
    last = pieces(engine.llama, ids[: start + 1])[-1]  # only the first token of a split character
    assert last.ids == (split.ids[0],) and "\\x" in last.text and "\ufffd" not in last.text


def test_prompt_view_splits_a_stored_icl_prompt_into_its_parts(settings, conn, engine):
    BankStore(conn).create(
        "caps",
        [
            ExampleRow("capital of France?", "Paris.", 1),
            ExampleRow("capital of Japan?", "東京 (Tokyo).", 2),
            ExampleRow("capital of Italy?", "Rome.", 3),
        ],
        "Answer with the city.",
        test_size=0.0,
    )
    service = ChatService(Runtime(settings, conn, engine=engine))  # the session's loaded model
    conv = service.store.create("t", system_prompt="Be brief.")
    first = service.send(conv.id, "Hello", GREEDY)
    first.reply.text()
    first.save()
    turn = service.send(conv.id, "capital of Spain?", GREEDY, IclRequest("caps", "jaccard", 2))
    turn.reply.text()
    reply = turn.save()

    view = prompt_view(conn, engine, reply.id)
    labels = [p.label for p in view.parts]
    example_ids = [e["id"] for e in reply.provenance["icl"]["examples"]]
    assert labels[0] == "system" and labels[-2:] == ["query", "template"]
    assert labels.count("history") == 2 and sorted(labels[3:5]) == sorted(f"example {i}" for i in example_ids)
    assert view.tokens == reply.prompt_tokens == view.stored_tokens  # every token of the prompt as sent, once
    assert "Be brief." in view.parts[0].text and "capital of Spain?" in view.parts[-2].text
    assert view.totals()["example"] == reply.provenance["icl"]["example_tokens"]
    assert "".join(p.text for p in view.reply) == reply.content


def test_tokens_command_prints_pieces_ids_and_count(engine):
    result = subprocess.run([sys.executable, "-m", "tunelab.cli", "tokens", "-"], input=CJK, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    n = len(tokenize(engine.llama, CJK))
    assert lines[-1].startswith(f"{n} tokens")
    assert any("+" in line.split()[0] and "split across them" in line for line in lines[:-1])
    assert "'東" in result.stdout or "東'" in result.stdout


def test_tokens_command_refuses_a_user_message(settings, conn):
    store = ChatService(Runtime(settings, conn)).store
    conv = store.create("t")
    user = store.add_user(conv.id, "hi")
    result = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "tokens", "--prompt", str(user.id)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "give the id of a reply" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
async def test_t_on_a_reply_opens_the_token_modal(settings, conn):
    from tunelab.tui.app import TunelabApp
    from tunelab.tui.screens.tokens import STYLES, TokensScreen, token_text
    from tunelab.tui.widgets.chat.message_view import MessageView

    app = TunelabApp(settings, conn)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        screen.query_one("#prompt").value = "日本語で挨拶してください"
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        reply = [v for v in screen.query(MessageView) if v.role == "assistant"][-1]
        reply.focus()
        await pilot.press("t")
        await app.workers.wait_for_complete()
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, TokensScreen)
        query = next(p for p in modal.view.parts if p.label == "query")
        assert "日本語で挨拶してください" in query.text and modal.view.tokens == reply.message.prompt_tokens
        first = modal.view.parts[0]
        colours = [span.style for span in token_text(first.pieces).spans]
        assert colours == [STYLES[i % 2] for i in range(len(first.pieces))]  # every token boundary is a colour change
        assert len({str(span.style) for span in modal.query(".tokens-part").first().render().spans}) == 2
        # no character split across tokens shows as U+FFFD; the sampled reply itself may hold one,
        # where the model emitted bytes that are not UTF-8 (seen once in a Japanese reply)
        rendered = "".join(str(s.render()) for s in modal.query(".tokens-part"))
        assert rendered.count("\ufffd") == reply.message.content.count("\ufffd")
        await pilot.press("escape")
        assert not isinstance(app.screen, TokensScreen)
