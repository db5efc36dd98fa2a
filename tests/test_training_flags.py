"""Both training commands spell the shared settings as peft / trl do; the old spellings still work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from tunelab.cli import cli
from tunelab.cli.training import args_from, dataclass_options
from tunelab.errors import TunelabError
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.preference_args import PreferenceArgs

NEW_FLAGS = ("--lora-r", "--lora-alpha", "--lora-dropout", "--learning-rate", "--max-steps")
OLD_FLAGS = ("--r ", "--alpha ", "--dropout ", "--lr ", "--steps ")


def test_a_run_stored_with_the_old_keys_loads_into_the_new_fields() -> None:
    old = {"r": 4, "alpha": 8.0, "dropout": 0.0, "lr": 1e-3, "max_steps": 3, "target_modules": ["q_proj"]}
    args = SFTArgs.from_dict(old)
    assert (args.lora_r, args.lora_alpha, args.lora_dropout, args.learning_rate, args.max_steps) == (4, 8.0, 0.0, 1e-3, 3)
    assert SFTArgs.from_dict(args.to_dict()) == args
    with pytest.raises(TunelabError, match="unknown training setting"):
        SFTArgs.from_dict({"rank": 4})


@pytest.mark.parametrize(
    ("command", "new_flags"),
    [
        (["train"], NEW_FLAGS),
        (["feedback", "train"], NEW_FLAGS),
        (["curve"], ("--learning-rate", "--lora-r")),
    ],
)
def test_help_shows_the_new_flags_and_hides_the_old_ones(command: list[str], new_flags: tuple[str, ...], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), *command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert all(flag in result.output for flag in new_flags)
    assert not any(flag in result.output for flag in OLD_FLAGS)


@pytest.mark.parametrize("cls", [SFTArgs, PreferenceArgs])
def test_the_old_flags_still_set_the_fields(cls: type) -> None:
    given: dict[str, Any] = {}

    @click.command()
    @dataclass_options(cls)
    def command(**kwargs: Any) -> None:
        given.update(kwargs)

    old = ["--r", "4", "--alpha", "8", "--dropout", "0.1", "--lr", "0.001", "--steps", "3"]
    result = CliRunner().invoke(command, old)
    assert result.exit_code == 0, result.output
    args = args_from(cls, given)
    assert (args.lora_r, args.lora_alpha, args.lora_dropout, args.learning_rate, args.max_steps) == (4, 8, 0.1, 0.001, 3)
