"""The llama.cpp engine on the real bundled model."""

from __future__ import annotations

import pytest

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.context import fit_history
from tunelab.engine.reply import StopStrings
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError

GREEDY = SamplerParams(temperature=0, repeat_penalty=1.0, max_tokens=40)
QUESTION = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Name three colours.")]


def test_greedy_reply_is_deterministic(engine):
    first = engine.chat(QUESTION, GREEDY).text()
    second = engine.chat(QUESTION, GREEDY).text()
    assert first and first == second


def test_stream_matches_llama_cpp_non_streaming(engine):
    streamed = "".join(engine.chat(QUESTION, GREEDY))
    raw = engine.llama.create_chat_completion(messages=[m.as_dict() for m in QUESTION], temperature=0, repeat_penalty=1.0, max_tokens=40)[
        "choices"
    ][0]["message"]["content"]
    assert streamed == raw


def test_stats_are_sane(engine):
    reply = engine.chat(QUESTION, GREEDY)
    text = reply.text()
    stats = reply.stats
    assert stats.prompt_tokens == engine.count_tokens(QUESTION)
    assert 0 < stats.completion_tokens <= GREEDY.max_tokens
    assert stats.ttft_ms is not None and 0 < stats.ttft_ms < stats.total_ms
    assert stats.decode_tps is not None and stats.decode_tps > 1
    assert stats.finish_reason in ("stop", "length")
    assert len(engine.llama.tokenize(text.encode(), add_bos=False)) <= stats.completion_tokens + 2


def test_max_tokens_gives_length(engine):
    reply = engine.chat([ChatMessage("user", "Write a long story about a dragon.")], SamplerParams(temperature=0, max_tokens=5))
    reply.text()
    assert reply.stats.completion_tokens == 5
    assert reply.stats.finish_reason == "length"


def test_seed_reproduces_a_sampled_reply(engine):
    params = SamplerParams(temperature=1.0, seed=1234, max_tokens=20)
    assert engine.chat(QUESTION, params).text() == engine.chat(QUESTION, params).text()


def test_cancel_keeps_partial_text(engine):
    reply = engine.chat([ChatMessage("user", "Count from one to one hundred in words.")], SamplerParams(temperature=0, max_tokens=200))
    for i, _ in enumerate(reply):
        if i == 3:
            break
    reply.close()
    assert reply.stats.finish_reason == "cancelled"
    assert reply.stats.completion_tokens <= 5
    assert reply.so_far
    # the engine is usable straight after a cancellation
    assert engine.chat(QUESTION, GREEDY).text()


def test_stop_string_cuts_reply(engine):
    full = engine.chat(QUESTION, GREEDY).text()
    words = full.split()
    assert len(words) > 3, full
    stop = words[len(words) // 2]
    reply = engine.chat(QUESTION, SamplerParams(temperature=0, repeat_penalty=1.0, max_tokens=40, stop=[stop]))
    assert reply.text() == full[: full.index(stop)]
    assert reply.stats.finish_reason == "stop"


def test_stop_strings_hold_back_only_possible_prefixes():
    stops = StopStrings(["END"])
    assert stops.feed("hello E") == ("hello ", False)
    assert stops.feed("N") == ("", False)
    assert stops.feed("D more") == ("", True)
    plain = StopStrings([])
    assert plain.feed("abc") == ("abc", False)


def test_overflow_drops_oldest_turns_but_keeps_system(engine):
    long_turn = "word " * 600
    history = [ChatMessage("system", "Be brief.")]
    for i in range(6):
        history += [ChatMessage("user", f"{i} {long_turn}"), ChatMessage("assistant", f"ok {i}")]
    history.append(ChatMessage("user", "And now?"))
    reply = engine.chat(history, SamplerParams(temperature=0, max_tokens=16))
    reply.text()
    assert reply.stats.dropped_turns > 0
    assert reply.messages[0] == ChatMessage("system", "Be brief.")
    assert reply.messages[1].role == "user"
    assert reply.messages[-1].content == "And now?"
    assert reply.stats.prompt_tokens + 16 <= engine.n_ctx


def test_prompt_longer_than_context_is_a_clear_error(engine):
    with pytest.raises(TunelabError, match="prompt too long"):
        engine.chat([ChatMessage("user", "word " * 5000)], GREEDY)


def test_empty_prompt_is_refused(engine):
    with pytest.raises(TunelabError, match="empty prompt"):
        engine.chat([ChatMessage("user", "   ")], GREEDY)


def test_fit_history_counts_with_given_counter():
    messages = [ChatMessage("system", "s"), ChatMessage("user", "a"), ChatMessage("assistant", "b"), ChatMessage("user", "c")]
    fitted, dropped = fit_history(messages, budget=2, count=len)
    assert fitted == [ChatMessage("system", "s"), ChatMessage("user", "c")]
    assert dropped == 2


def test_kv_prefix_is_reused_across_turns(engine):
    engine.chat(QUESTION, GREEDY).text()
    follow_up = QUESTION + [ChatMessage("assistant", "Red, green, blue."), ChatMessage("user", "One more?")]
    tokens = engine.template.tokens(follow_up)
    cached = 0
    for old, new in zip(engine.llama._input_ids, tokens):
        if old != new:
            break
        cached += 1
    assert cached >= engine.count_tokens(QUESTION) - 2
