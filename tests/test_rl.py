"""RL against tunelab's reward model (GRPO / RLOO): where the prompts come from, and the refusals
that need no model."""

from __future__ import annotations

import pytest
from feedback_support import rate_helpful_vs_rude

from tunelab.errors import TunelabError
from tunelab.finetune import feedback_runs, rl
from tunelab.finetune.preference_args import PreferenceArgs


def test_rl_needs_prompts_and_whole_groups(settings, conn):
    with pytest.raises(TunelabError, match="only 0 prompt"):
        feedback_runs.prepare(settings, conn, "grpo", PreferenceArgs())
    with pytest.raises(TunelabError, match="apply to --method grpo"):
        feedback_runs.prepare(settings, conn, "kto", PreferenceArgs(), bank="x")
    with pytest.raises(TunelabError, match="num_generations must be >= 2"):
        PreferenceArgs(num_generations=1)


def test_rl_prompts_come_from_the_rated_prompts_once_each(conn):
    rate_helpful_vs_rude(conn, 3)
    rows = rl.feedback_prompts(conn)
    assert [r["prompt"][-1]["content"] for r in rows] == [f"What is {i} plus {i + 3}?" for i in range(3)]
