"""Feedback runs recorded like SFT runs (real trl on CPU): cancel/resume, adapters chat and compare
can serve, the reward model best-of-n finds, and refusals before anything is loaded."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from feedback_support import rate, rate_helpful_vs_rude, rate_sentiment
from finetune_support import base_pair  # noqa: F401

from tunelab.errors import TunelabError
from tunelab.eval.arms import standard_grid
from tunelab.eval.report import reward_markdown
from tunelab.eval.reward_report import reward_summary
from tunelab.finetune import feedback_runs
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.methods import sft
from tunelab.finetune.methods.reward import load_reward_model
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.runtime.arm_runner import ArmRunner, greedy
from tunelab.runtime.compare import finish, run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import bank_test_set, open_bank
from tunelab.stores import demo_banks
from tunelab.stores.banks import BankStore
from tunelab.stores.runs import RunStore, adapter_gguf, adapter_training_ids, latest_adapter_for_bank

FAST = dict(batch_size=4, max_length=96, learning_rate=5e-4, save_steps=100)


@pytest.mark.heavy
@pytest.mark.slow
def test_kto_run_cancels_resumes_and_dpo_continues_an_sft_adapter(settings, conn, base_pair) -> None:
    from tunelab.engine.sampling import SamplerParams
    from tunelab.runtime.chat_service import ChatService

    rate_sentiment(conn, 4)
    cancel = threading.Event()
    steps: list[int] = []

    def listener(event) -> None:
        steps.append(event.step)
        if event.step == 1:
            cancel.set()

    plan = feedback_runs.prepare(
        settings, conn, "kto", PreferenceArgs(max_steps=3, **FAST), model=str(base_pair.gguf_path), hf_dir=base_pair.hf_dir
    )
    assert plan.run.name == "feedback-kto" and plan.run.method == "kto" and len(plan.rows) == 8
    first = feedback_runs.train(plan, listener, cancel)
    assert first.cancelled and first.run.status == "cancelled" and first.run.step == 1
    assert (first.run.checkpoints_dir / "checkpoint-1").is_dir()
    with pytest.raises(TunelabError, match="no adapter"):
        adapter_gguf(conn, "feedback-kto")

    rate(conn, "Added after the run started", "This review is fresh.", "up")  # a resumed run keeps its frozen rows
    again = feedback_runs.prepare_resume(settings, conn, "feedback-kto")
    assert again.resume_from is not None and again.resume_from.name == "checkpoint-1" and len(again.rows) == 8
    done = feedback_runs.train(again, lambda event: steps.append(event.step))
    assert not done.cancelled and done.run.status == "done" and steps == [1, 2, 3]
    assert [h["step"] for h in done.run.loss_history] == [1, 2, 3]
    assert done.adapter is not None and done.metrics["steps"] == 3 and done.metrics["method"] == "kto"
    assert {"logp_preferred_before", "logp_preferred_after"} <= set(done.metrics)  # the effect: test_feedback_train
    assert not done.run.checkpoints_dir.exists()
    with pytest.raises(TunelabError, match="already done"):
        feedback_runs.prepare_resume(settings, conn, "feedback-kto")

    # `tunelab chat --adapter feedback-kto` serves it on the base it was trained for.
    service = ChatService(Runtime(settings, conn))
    service.settings.model = str(base_pair.gguf_path)
    assert service.use_adapter("feedback-kto") is not None
    conversation = service.store.create()
    turn = service.send(conversation.id, "Say hi.", SamplerParams(temperature=0, max_tokens=4))
    assert turn.save().adapter is not None
    service.engine.llama.close()

    # DPO on top of an SFT adapter: the new adapter carries the SFT run's bank and training ids,
    # so compare's default adapter and leakage guard see what it has (indirectly) learned from.
    demo = demo_banks.sentiment(size=12)
    BankStore(conn).create("sentiment", demo.rows, demo.instruction)
    train = BankStore(conn).examples("sentiment", split="train")[:2]
    rows = [
        {"prompt": sft.prompt_messages(demo.instruction, e.input), "completion": [{"role": "assistant", "content": e.output}]}
        for e in train
    ]
    sft.train(
        sft.plan_for(
            settings,
            conn,
            "sst",
            "sentiment",
            [e.id for e in train],
            rows,
            SFTArgs(max_steps=1, max_length=96, batch_size=2),
            hf_dir=base_pair.hf_dir,
        )
    )
    dpo = feedback_runs.prepare(settings, conn, "dpo", PreferenceArgs(max_steps=2, **{**FAST, "batch_size": 2}), on="sst")
    assert dpo.run.name == "sst-dpo" and dpo.start_adapter is not None and dpo.start_adapter.name == "sst"
    result = feedback_runs.train(dpo)
    assert result.adapter is not None and result.adapter.bank == "sentiment" and result.metrics["on"] == "sst"
    assert adapter_training_ids(conn, "sst-dpo") == {e.id for e in train}
    assert latest_adapter_for_bank(conn, "sentiment") == "sst-dpo"
    assert RunStore(conn).get("sst-dpo").method == "dpo"

    # `tunelab compare --adapter sst-dpo --adapter sst`: the new adapter against its predecessor.
    bank = open_bank(conn, "sentiment")
    arms = standard_grid([], adapters=["sst-dpo", "sst"])
    runner = ArmRunner(Runtime(settings, conn), bank)
    comparison = run_comparison(runner, bank_test_set(conn, bank, limit=2), arms, greedy(4))
    _, report = finish(settings, conn, comparison.id, bank.labels)
    assert "| lora:sst-dpo |" in (report / "report.md").read_text() and "| lora:sst |" in (report / "report.md").read_text()
    runner.runtime.close()


@pytest.mark.heavy
@pytest.mark.slow
def test_reward_run_is_found_for_its_base_and_refused_for_another(settings, conn, base_pair, tmp_path: Path) -> None:
    rate_helpful_vs_rude(conn, 8)
    plan = feedback_runs.prepare(
        settings,
        conn,
        "reward",
        PreferenceArgs(max_steps=4, **{**FAST, "learning_rate": 1e-3}),
        name="rm",
        model=str(base_pair.gguf_path),
        hf_dir=base_pair.hf_dir,
    )
    assert (len(plan.rows), len(plan.held_out)) == (6, 2)
    result = feedback_runs.train(plan)
    assert result.run.status == "done" and result.reward_dir == settings.home / "reward_models" / "rm"
    assert "held_out_accuracy" in result.metrics
    with pytest.raises(TunelabError, match="no adapter"):
        adapter_gguf(conn, "rm")  # a reward model is not something chat can serve as an adapter

    name, scorer = load_reward_model(settings, conn, None, base_pair.gguf_path)
    assert name == "rm"
    helpful, rude = scorer.score([{"role": "user", "content": "What is 30 plus 33?"}], ["Happy to help: 63.", "I refuse to answer that."])
    assert helpful > rude

    # The compare report's reward column: the arm that answers helpfully wins on every item.
    items = [
        {
            "input": f"What is {i} plus {i + 1}?",
            "outputs": {"base": {"output": "Stop asking me things."}, "lora:new": {"output": f"Sure - it is {2 * i + 1}."}},
        }
        for i in (40, 41, 42)
    ]
    column = reward_summary(items, ["base", "lora:new"], "", scorer, "rm")
    base_arm, new_arm = column.arms
    assert base_arm.versus_first is None and new_arm.mean > base_arm.mean
    assert new_arm.versus_first is not None and (new_arm.versus_first.wins, new_arm.versus_first.n) == (3, 3)
    assert "| lora:new |" in "\n".join(reward_markdown(column)) and "100%" in "\n".join(reward_markdown(column))

    other = tmp_path / "other.gguf"  # another model file: different bytes, different sha256
    shutil.copyfile(base_pair.gguf_path, other)
    with other.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(TunelabError, match="trained on another base"):
        load_reward_model(settings, conn, "rm", other)
    with pytest.raises(TunelabError, match=r"no reward model for other\.gguf"):
        load_reward_model(settings, conn, None, other)


def _refused(settings, conn: sqlite3.Connection, method: str, match: str, **kwargs) -> None:
    with pytest.raises(TunelabError, match=match):
        feedback_runs.prepare(settings, conn, method, PreferenceArgs(), hf_dir=Path("/nonexistent"), **kwargs)
    assert RunStore(conn).list() == []  # refused before a run was recorded or a model loaded


def test_too_little_or_useless_feedback_is_refused_before_loading(settings, conn) -> None:
    _refused(settings, conn, "kto", "no ratings yet: rate at least 8")
    for i in range(8):
        rate(conn, f"Question {i}", f"Answer {i}", "up")
    _refused(settings, conn, "kto", "all 8 ratings are 👍: KTO needs some 👎 too")
    _refused(settings, conn, "reward", "no preference pairs")
    rate(conn, "Question 0", "Answer 0", "down")  # same prompt, same text as the 👍: no preference
    _refused(settings, conn, "dpo", r"no preference pairs \(1 identical texts left out\).*--method kto")
    _refused(settings, conn, "reward", "starts from the base", on="anything")
    _refused(settings, conn, "kto", "no adapter named 'missing'", on="missing")
