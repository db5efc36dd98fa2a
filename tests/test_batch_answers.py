"""Several prompts decoded together in one llama.cpp context give the replies one-at-a-time
decoding gives, token for token, on the real bundled model."""

from __future__ import annotations

from tunelab.engine.sampling import SamplerParams
from tunelab.icl.prompt import task_messages
from tunelab.icl.selectors import Selected
from tunelab.stores.demo_banks import qa

GREEDY = SamplerParams(temperature=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, max_tokens=48, seed=0)


def conversations(n: int) -> list:
    """Free-text questions (long, varied replies), every second one with two examples."""
    bank = qa()
    rows = bank.rows
    examples = [Selected(i, rows[i].input, rows[i].output, 0.0) for i in (3, 7)]
    return [task_messages(bank.instruction, rows[200 + i].input, examples if i % 2 else []) for i in range(n)]


def test_batched_replies_equal_sequential_ones_with_slots_refilled(engine):
    convs = conversations(7)
    sequential = []
    for messages in convs:
        reply = engine.chat(messages, GREEDY)
        sequential.append((reply.text(), reply.stats.completion_tokens, reply.stats.finish_reason, reply.stats.prompt_tokens))
    # 3 slots for 7 prompts: replies end at different steps and the waiting prompts take their slots
    batched = dict(engine.answer_together(convs, [GREEDY] * len(convs), parallel=3))
    assert sorted(batched) == list(range(len(convs)))
    got = [
        (r.text(), r.stats.completion_tokens, r.stats.finish_reason, r.stats.prompt_tokens) for r in (batched[i] for i in range(len(convs)))
    ]
    assert got == sequential
    assert len({text for text, *_ in got}) == len(convs)  # different replies, not one repeated
    assert all(r.stats.ttft_ms is not None and r.stats.total_ms >= r.stats.ttft_ms for r in batched.values())


def test_closing_the_batch_early_stops_it_and_frees_the_engine(engine):
    convs = conversations(4)
    answers = engine.answer_together(convs, [GREEDY] * len(convs), parallel=2)
    index, first = next(answers)
    answers.close()  # what Ctrl-C does to the loop consuming it
    assert first.text()
    again = engine.chat(convs[index], GREEDY).text()  # the engine's lock was released
    assert again == first.text()
