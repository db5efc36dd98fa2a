"""A chat turn from prompt to stored reply, with provenance, through the real engine."""

from __future__ import annotations

import pytest

from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.runtime.chat_service import ChatService
from tunelab.runtime.runtime import Runtime
from tunelab.stores.files import sha256_file

GREEDY = SamplerParams(temperature=0, max_tokens=12)


@pytest.fixture
def service(settings, conn, engine):
    chat = ChatService(Runtime(settings, conn, engine=engine))  # the session's loaded model
    return chat


def test_send_stores_prompt_and_reply_with_provenance(settings, conn, bundled_model):
    service = ChatService(Runtime(settings, conn))
    conv = service.store.create("t", system_prompt="Answer briefly.")
    turn = service.send(conv.id, "Name a fruit.", GREEDY)
    text = turn.reply.text()
    reply = turn.save()
    assert reply.content == text and reply.role == "assistant"
    assert reply.model_path == str(bundled_model.resolve())
    assert reply.model_sha256 == sha256_file(bundled_model)
    assert isinstance(reply.seed, int) and reply.params == {**GREEDY.to_dict(), "seed": reply.seed}  # the seed drawn is kept
    assert reply.prompt_tokens == turn.reply.stats.prompt_tokens > 0
    assert not reply.interrupted
    assert [m.role for m in service.history(conv.id)] == ["system", "user", "assistant"]


def test_regenerate_replaces_the_last_reply(service):
    conv = service.store.create("t")
    first_turn = service.send(conv.id, "Say a colour.", GREEDY)
    first_turn.reply.text()
    first_turn.save()
    first = service.store.messages(conv.id)
    turn = service.send(conv.id, "Another one.", GREEDY)
    turn.reply.text()
    old = turn.save()
    new_turn = service.regenerate(conv.id, SamplerParams(temperature=1.0, seed=5, max_tokens=12))
    new_turn.reply.text()
    new = new_turn.save()
    messages = service.store.messages(conv.id)
    assert [m.id for m in messages[:-1]] == [m.id for m in first] + [messages[-2].id]
    assert messages[-1].id == new.id != old.id  # ids are never reused
    assert messages[-1].seed not in (5, None) and messages[-1].params["seed"] == messages[-1].seed  # a new draw, stored
    assert messages[-2].content == "Another one."


def test_nothing_stored_for_a_prompt_that_can_never_fit(service):
    conv = service.store.create("t")
    with pytest.raises(TunelabError, match="prompt too long"):
        service.send(conv.id, "word " * 5000, GREEDY)
    assert service.store.messages(conv.id) == []


def test_regenerate_without_reply_is_refused(service):
    conv = service.store.create("t")
    with pytest.raises(TunelabError, match="nothing to regenerate"):
        service.regenerate(conv.id, GREEDY)


SAMPLED = SamplerParams(temperature=0.7, max_tokens=24)


def test_each_sampled_reply_draws_a_new_seed_and_a_stored_seed_reproduces_it(service):
    conv = service.store.create("t")
    prompt = "Write one sentence about the sea."
    replies = []
    for _ in range(4):
        turn = service.send(conv.id, prompt, SAMPLED)
        turn.reply.text()
        replies.append(turn.save())
    assert len({r.seed for r in replies}) == 4
    assert len({r.content for r in replies}) > 1  # not the same reply every time, as with a fixed seed
    again = service.send(service.store.create("t2").id, prompt, SamplerParams.from_dict(replies[0].params))
    assert again.reply.text() == replies[0].content  # the stored params (with their seed) give the reply back
