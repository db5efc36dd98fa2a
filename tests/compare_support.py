"""A demo bank and a few-step LoRA on it, shared by the comparison and remote-engine tests."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from finetune_support import base_pair  # noqa: F401

from tunelab.cli import cli
from tunelab.runtime.test_sets import list_banks, open_bank


@pytest.fixture
def sentiment_bank(settings, conn):
    """The packaged demo sentiment bank, imported the way a user does it."""
    result = CliRunner().invoke(cli, ["bank", "import-demo", "sentiment", "--size", "60"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (name,) = list_banks(conn)
    return open_bank(conn, name)


@pytest.fixture
def few_step_adapter(settings, conn, sentiment_bank, base_pair):
    """A LoRA from a 3-step SFT run on the bank's train split (issue 4's real trainer)."""
    from tunelab.finetune.args import SFTArgs
    from tunelab.finetune.methods import sft

    args = SFTArgs(max_steps=3, batch_size=4, max_length=128, save_steps=100)
    plan = sft.prepare(settings, conn, "sst-3", sentiment_bank.name, args, hf_dir=base_pair.hf_dir)
    result = sft.train(plan)
    assert result.adapter is not None
    return result.adapter.name
