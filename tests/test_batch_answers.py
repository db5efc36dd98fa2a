"""Several prompts decoded together in one llama.cpp context give the replies one-at-a-time
decoding gives, token for token, on the real bundled model: in the engine, in a comparison grid,
in a distillation and in best-of."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tunelab.engine.sampling import SamplerParams
from tunelab.eval.arms import Arm
from tunelab.icl.prompt import task_messages
from tunelab.icl.selectors import Selected
from tunelab.runtime.arm_runner import ArmRunner, Query, greedy
from tunelab.runtime.best_of_n import sample_best
from tunelab.runtime.compare import Progress, run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import bank_test_set
from tunelab.stores.banks import BankStore
from tunelab.stores.comparisons import ComparisonStore
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


def qa_bank(conn):
    """A free-text bank (replies of different lengths, so slots free up at different steps)."""
    demo = qa()
    store = BankStore(conn)
    store.create("qa", demo.rows[:40], demo.instruction, test_size=0.2, seed=0)
    return store.get("qa")


def test_a_batched_grid_stores_what_the_sequential_grid_stores(settings, conn, engine):
    bank = qa_bank(conn)
    test_set = bank_test_set(conn, bank, limit=5)
    arms = [Arm(), Arm(None, "jaccard", 2)]
    store = ComparisonStore(conn)

    def grid(parallel: int) -> tuple[dict, list[Progress]]:
        runner = ArmRunner(Runtime(replace(settings, parallel=parallel), conn, engine=engine), bank)
        events: list[Progress] = []
        comparison = run_comparison(runner, test_set, arms, greedy(40), events.append)
        results = {
            (r.arm, r.position): (r.output, r.prompt_tokens, r.completion_tokens, r.finish_reason, r.examples)
            for r in store.results(comparison.id)
        }
        store.delete(comparison.id, [], settings.home)  # the same setup would otherwise be reused, not answered
        return results, events

    sequential, _ = grid(1)
    batched, events = grid(3)
    assert batched == sequential and len(batched) == 10
    assert len({output for output, *_ in batched.values()}) > 5  # varied free-text replies, not one repeated
    assert [e.done for e in events] == list(range(1, 11)) and not any(e.reused for e in events)
    assert sorted((e.arm, e.position) for e in events) == sorted(batched)  # each stored result reported once


def test_a_stop_mid_batch_keeps_the_stored_answers_and_the_rerun_answers_the_rest(settings, conn, engine):
    bank = qa_bank(conn)
    test_set = bank_test_set(conn, bank, limit=6)
    runner = ArmRunner(Runtime(replace(settings, parallel=3), conn, engine=engine), bank)

    def stop_after_two(event: Progress) -> None:
        if event.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_comparison(runner, test_set, [Arm()], greedy(40), stop_after_two)
    comparison = ComparisonStore(conn).list()[0]
    assert len(ComparisonStore(conn).results(comparison.id)) == 2  # the replies in flight were dropped, not stored half
    assert engine.chat(task_messages(bank.instruction, "hi"), GREEDY).text()  # the engine was freed
    events: list[Progress] = []
    run_comparison(runner, test_set, [Arm()], greedy(40), events.append)
    assert [e.reused for e in events] == [True] * 2 + [False] * 4


def test_answer_all_keeps_each_query_away_from_its_own_example(settings, conn, engine):
    bank = qa_bank(conn)
    train = BankStore(conn).examples("qa", split="train")[:4]
    runner = ArmRunner(Runtime(replace(settings, parallel=2), conn, engine=engine), bank)
    queries = [Query(e.input, e.id) for e in train]
    answered = dict(runner.answer_all(Arm(None, "jaccard", 2), queries, greedy(8)))
    assert sorted(answered) == [0, 1, 2, 3]
    for index, arm_reply in answered.items():
        shown = [e["id"] for e in arm_reply.examples]
        assert len(shown) == 2 and train[index].id not in shown


class LengthScorer:
    """A reward that prefers longer replies: deterministic, so the pick depends only on the replies."""

    def score(self, prompt: list[dict[str, str]], replies: list[str]) -> list[float]:
        return [float(len(r)) for r in replies]


def test_best_of_samples_the_same_candidates_together_as_one_at_a_time(engine):
    messages = conversations(1)[0]
    params = SamplerParams(temperature=0.9, top_k=40, top_p=0.95, max_tokens=24, seed=11)
    together = sample_best(engine, messages, params, 4, LengthScorer(), parallel=4)
    streamed = [engine.chat(messages, replace(params, seed=c.seed)).text() for c in together.candidates]  # one at a time
    assert [c.text for c in together.candidates] == streamed
    assert [c.seed for c in together.candidates] == [11, 12, 13, 14] and len(set(streamed)) > 1
    assert together.chosen.text == max(streamed, key=len)
