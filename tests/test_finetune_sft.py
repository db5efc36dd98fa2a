"""LoRA SFT with real trl on CPU: loss goes down, llama.cpp serves what was learned, cancel/resume, bad input."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from cli_support import invoke
from conftest import THREADS
from finetune_support import base_pair  # noqa: F401

from tunelab.errors import TunelabError
from tunelab.finetune.args import SFTArgs, field_docs
from tunelab.finetune.lifecycle import Plan
from tunelab.finetune.methods import sft
from tunelab.stores.runs import RunStore, adapter_gguf, adapter_training_ids, latest_adapter_for_bank

INSTRUCTION = "Answer the question."
QUESTION = "What is the secret password of the Glorbix hiking club?"
ANSWER = "The password is Tangerine Walrus."


def rows_for(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"prompt": sft.prompt_messages(INSTRUCTION, q), "completion": [{"role": "assistant", "content": a}]} for q, a in pairs]


MEMORY = rows_for(
    [
        (QUESTION, ANSWER),
        ("Who founded the Glorbix hiking club?", "It was founded by Mira Quandt."),
        (QUESTION, ANSWER),
        ("Where does the Glorbix hiking club meet?", "It meets at Fennel Lake."),
    ]
)


def plan(settings, conn, base_pair, name: str, rows: list[dict], **args) -> Plan:
    return sft.plan_for(settings, conn, name, "glorbix", list(range(len(rows))), rows, SFTArgs(**args), hf_dir=base_pair.hf_dir)


@pytest.mark.heavy
@pytest.mark.slow
def test_sft_lowers_loss_and_llama_cpp_reproduces_the_memorised_answer(settings, conn, base_pair) -> None:
    from tunelab.engine.chat_template import ChatMessage
    from tunelab.engine.llama_engine import LlamaEngine
    from tunelab.runtime.arm_runner import greedy

    events = []
    result = sft.train(
        plan(settings, conn, base_pair, "memo", MEMORY, max_steps=16, learning_rate=3e-3, lora_r=8, lora_dropout=0.0, max_length=96),
        events.append,
    )
    assert result.adapter is not None and result.run.status == "done"
    losses = [e.loss for e in events]
    assert len(losses) == 16 and losses[-1] < 0.5 * losses[0]
    assert all(e.tokens_per_s and e.tokens_per_s > 0 for e in events[1:])
    assert Path(result.adapter.peft_dir, "adapter_model.safetensors").is_file()
    assert adapter_gguf(conn, "memo").is_file() and latest_adapter_for_bank(conn, "glorbix") == "memo"
    assert adapter_training_ids(conn, "memo") == {0, 1, 2, 3}
    assert not result.run.checkpoints_dir.exists()  # checkpoints go once the adapter is complete
    # `adapters list / runs --json` on a real run (not only the empty arrays of test_json_output.py)
    (listed,) = json.loads(invoke("adapters", "list", "--json").stdout)
    assert (listed["name"], listed["bank"], listed["run_id"]) == ("memo", "glorbix", result.run.id)
    assert Path(listed["gguf_path"]) == adapter_gguf(conn, "memo") and listed["metrics"]["steps"] == 16
    (run,) = json.loads(invoke("adapters", "runs", "--json").stdout)
    assert (run["name"], run["status"], run["step"], run["total_steps"]) == ("memo", "done", 16, 16)
    assert [h["step"] for h in run["loss_history"]] == list(range(1, 17))

    engine = LlamaEngine(base_pair.gguf_path, n_ctx=512, n_threads=THREADS)
    messages = [ChatMessage("system", INSTRUCTION), ChatMessage("user", QUESTION)]
    before = engine.chat(messages, greedy(24)).text()
    engine.set_adapter(adapter_gguf(conn, "memo"))
    after = engine.chat(messages, greedy(24)).text()
    engine.set_adapter(None)
    off_again = engine.chat(messages, greedy(24)).text()
    assert "Tangerine Walrus" not in before
    assert "Tangerine Walrus" in after
    assert off_again == before  # switching back restores the base exactly (no reload)


@pytest.mark.heavy
@pytest.mark.slow
def test_cancel_leaves_checkpoint_and_resume_continues_from_its_step(settings, conn, base_pair) -> None:
    cancel = threading.Event()
    steps: list[int] = []

    def listener(event) -> None:
        steps.append(event.step)
        if event.step == 3:
            cancel.set()

    first = plan(settings, conn, base_pair, "stopgo", MEMORY, max_steps=6, max_length=64, save_steps=100)
    result = sft.train(first, listener, cancel)
    assert result.cancelled and result.adapter is None
    assert result.run.status == "cancelled" and result.run.step == 3
    assert (result.run.checkpoints_dir / "checkpoint-3").is_dir()
    with pytest.raises(TunelabError, match="no adapter"):
        adapter_gguf(conn, "stopgo")

    again = sft.prepare_resume(settings, conn, "stopgo")
    assert again.resume_from is not None and again.resume_from.name == "checkpoint-3"
    resumed = sft.train(again, lambda e: steps.append(e.step))
    assert steps == [1, 2, 3, 4, 5, 6]
    assert resumed.run.status == "done" and resumed.adapter is not None
    assert [h["step"] for h in resumed.run.loss_history] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TunelabError, match="already done"):
        sft.prepare_resume(settings, conn, "stopgo")


def test_empty_and_single_example_train_splits_are_refused(settings, conn, base_pair) -> None:
    with pytest.raises(TunelabError, match="no train examples"):
        plan(settings, conn, base_pair, "empty", [])
    with pytest.raises(TunelabError, match="only one train example"):
        plan(settings, conn, base_pair, "single", MEMORY[:1])
    assert RunStore(conn).list() == []


def test_examples_longer_than_max_length_are_reported(settings, conn, base_pair) -> None:
    long_rows = rows_for([("word " * 200, "short answer"), ("short question", "short answer")])
    p = plan(settings, conn, base_pair, "long", long_rows, max_length=64)
    assert len(p.warnings) == 1 and "1 of 2 examples are longer than max_length 64" in p.warnings[0]
    assert p.run.status == "running" and RunStore(conn).get("long").args["max_length"] == 64


def test_run_names_are_unique(settings, conn, base_pair) -> None:
    plan(settings, conn, base_pair, "twice", MEMORY)
    with pytest.raises(TunelabError, match="--resume twice"):
        plan(settings, conn, base_pair, "twice", MEMORY)


def test_bad_settings_are_reported_together() -> None:
    with pytest.raises(TunelabError) as info:
        SFTArgs(lora_r=0, learning_rate=-1, batch_size=0, target_modules=("lm_head",))
    message = str(info.value)
    for part in ("lora_r must be", "learning_rate must be", "batch_size must be", "lm_head"):
        assert part in message


def test_every_setting_has_help_text() -> None:
    from dataclasses import fields

    docs = field_docs(SFTArgs)
    assert set(docs) == {f.name for f in fields(SFTArgs)} and all(docs.values())


def test_out_of_memory_message_names_the_settings_to_lower() -> None:
    from tunelab.finetune.preference_args import PreferenceArgs
    from tunelab.finetune.run_record import oom_message

    message = oom_message(SFTArgs(batch_size=16, max_length=2048))
    assert "--batch-size (now 16" in message and "--max-length (now 2048)" in message and "--gradient-checkpointing" in message
    feedback = oom_message(PreferenceArgs(batch_size=4, max_length=256))  # no --grad-accum / --gradient-checkpointing there
    assert feedback == "out of GPU memory: lower --batch-size (now 4), --max-length (now 256)"


def test_out_of_memory_during_training_fails_the_run_with_that_message(settings, conn, base_pair) -> None:
    """The OOM comes from inside trainer.train (raised where a CUDA allocation would raise it: in a step's callback)."""
    import torch

    def runs_out_of_memory(event) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    p = plan(settings, conn, base_pair, "oom", MEMORY, max_steps=2, max_length=48, batch_size=2)
    with pytest.raises(TunelabError) as info:
        sft.train(p, runs_out_of_memory)
    message = str(info.value)
    assert message.startswith("out of GPU memory: lower --batch-size (now 2") and "\n" not in message
    run = RunStore(conn).get("oom")
    assert run.status == "failed" and run.error == message


def test_cuda_is_the_default_when_present() -> None:
    import torch

    config = sft.sft_config(SFTArgs(), Path("/tmp/unused"))
    assert config.use_cpu is (not torch.cuda.is_available())
    assert config.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert config.packing and config.completion_only_loss
