"""Real trl trainers for a few CPU steps on ratings made through the app's own stores.

What is asserted is the point of each method: KTO and DPO raise the policy's log-probability of
the replies the user preferred; the reward model ranks held-out pairs above chance; exported
rows are accepted by the trl trainers as they are.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import THREADS
from feedback_support import rate, rate_helpful_vs_rude, rate_sentiment
from finetune_support import base_pair  # noqa: F401

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.llama_engine import LlamaEngine
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.finetune import feedback_data, feedback_train
from tunelab.finetune.methods import dpo, kto, reward
from tunelab.finetune.methods.sft import ADAPTER_GGUF
from tunelab.finetune.preference_args import PreferenceArgs
from tunelab.stores.feedback import FeedbackStore

pytestmark = pytest.mark.slow


@pytest.fixture
def hf_base(base_pair) -> Path:
    """The session's dequantised bundled model (finetune_support.base_pair): one per worker, shared
    with every other training test, instead of a second dequantisation of the same GGUF."""
    return base_pair.hf_dir


# KTO estimates its KL baseline from the other examples in a batch, so it gets a batch of 4;
# DPO learns from each pair on its own and 2 keeps the test quick.
FAST = {
    "kto": PreferenceArgs(max_steps=8, batch_size=4, max_length=128, learning_rate=5e-4),
    "dpo": PreferenceArgs(max_steps=8, batch_size=2, max_length=128, learning_rate=5e-4),
}


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_policy_runs_raise_logp_of_preferred_replies(
    conn: sqlite3.Connection, hf_base: Path, bundled_model: Path, tmp_path: Path, method: str
) -> None:
    rate_sentiment(conn, 6)
    result = feedback_train.train(conn, method, hf_base, "base-sha", tmp_path / method, FAST[method], base_gguf=bundled_model)

    before, after = result.metrics["logp_preferred_before"], result.metrics["logp_preferred_after"]
    assert after > before + 0.5, (before, after)
    assert result.steps == 8 and len(result.losses) == 8
    assert (tmp_path / method / "adapter_config.json").is_file()
    assert (tmp_path / method / "adapter_model.safetensors").is_file()
    assert not (tmp_path / method / "ref").exists() and not (tmp_path / method / "trainer").exists()

    # The exported GGUF adapter loads in llama.cpp and changes what the model says. The engines
    # are made here and closed, not shared: idle llama.cpp threads slow later torch training.
    prompts = [[ChatMessage(m["role"], m["content"]) for m in r.snapshot.prompt] for r in FeedbackStore(conn).ratings()[:4]]
    greedy = SamplerParams(temperature=0, max_tokens=12)
    replies = []
    for lora in (None, tmp_path / method / ADAPTER_GGUF):
        llm = LlamaEngine(bundled_model, n_ctx=512, lora_path=lora, n_threads=THREADS)
        replies.append([llm.chat(messages, greedy).text() for messages in prompts])
        llm.llama.close()
    assert replies[0] != replies[1], replies  # a few steps need not flip every greedy reply, but some


@pytest.mark.heavy
def test_reward_model_ranks_held_out_pairs_and_refuses_another_base(conn: sqlite3.Connection, hf_base: Path, tmp_path: Path) -> None:
    rate_helpful_vs_rude(conn, 16)
    args = PreferenceArgs(max_steps=10, batch_size=4, max_length=128, learning_rate=1e-3)
    result = feedback_train.train(conn, "reward", hf_base, "base-sha", tmp_path / "rm", args)

    assert result.metrics["held_out_accuracy"] >= 0.75, result.metrics
    assert result.losses[-1] < result.losses[0]
    loaded = reward.RewardModel.load(tmp_path / "rm", hf_base, "base-sha")
    assert loaded.meta is not None and (loaded.meta.train_pairs, loaded.meta.held_out_pairs) == (12, 4)
    good, bad = loaded.score([{"role": "user", "content": "What is 20 plus 23?"}], ["Happy to help: 43.", "I refuse to answer that."])
    assert good > bad
    with pytest.raises(TunelabError, match="trained on another base"):
        reward.RewardModel.load(tmp_path / "rm", hf_base, "other-sha")
    with pytest.raises(TunelabError, match="not a tunelab reward model"):
        reward.RewardModel.load(tmp_path, hf_base, "base-sha")


def test_exported_files_are_accepted_by_the_trl_trainers_as_is(conn: sqlite3.Connection, hf_base: Path, tmp_path: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rate_sentiment(conn, 4)
    tokenizer = AutoTokenizer.from_pretrained(hf_base)
    args = PreferenceArgs(max_steps=1, batch_size=2, max_length=128)
    for fmt, build in (("kto", kto.build_trainer), ("dpo", dpo.build_trainer), ("reward", reward.build_trainer)):
        path = tmp_path / f"{fmt}.jsonl"
        n = feedback_data.export(conn, fmt, path)
        rows = list(load_dataset("json", data_files=str(path), split="train"))
        if fmt == "reward":
            model, tokenizer = reward.load_head_model(hf_base)
            peft = feedback_train.lora_config(args, "SEQ_CLS")
        else:
            model, peft = AutoModelForCausalLM.from_pretrained(hf_base), feedback_train.lora_config(args, "CAUSAL_LM")
        trainer = build(model, tokenizer, rows, args, tmp_path / f"out-{fmt}", peft, [])
        assert len(trainer.train_dataset) == n, fmt


def test_too_little_feedback_is_refused_before_loading_anything(conn: sqlite3.Connection, tmp_path: Path) -> None:
    missing = tmp_path / "no-base"
    with pytest.raises(TunelabError, match="no ratings yet"):
        feedback_train.train(conn, "kto", missing, "sha", tmp_path / "out")
    rate(conn, "Say hi", "Hi!", "up")
    with pytest.raises(TunelabError, match=r"no preference pairs.*--method kto"):
        feedback_train.train(conn, "dpo", missing, "sha", tmp_path / "out")
    with pytest.raises(TunelabError, match=r"batch_size must be >= 2 \(got 1\); beta must be > 0"):
        PreferenceArgs(batch_size=1, beta=0)
    assert not (tmp_path / "out").exists()
