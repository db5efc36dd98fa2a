"""`tunelab curve`: learning curves of ICL (k examples per prompt) and LoRA (n train examples x seeds)."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, apply_engine_options, engine_options, pass_app
from tunelab.cli.training import args_from, ctrl_c_checkpoints, dataclass_options
from tunelab.errors import TunelabError
from tunelab.eval.arms import parse_selectors
from tunelab.eval.report import REPORT_MD
from tunelab.runtime import curve
from tunelab.runtime.arm_runner import ArmRunner, default_max_tokens, greedy
from tunelab.runtime.test_sets import bank_test_set, open_bank
from tunelab.runtime.training import SFTArgs


def show(event: curve.CurveProgress) -> None:
    click.echo(f"\r{event.describe()}\033[K", nl=False, err=True)


@click.command("curve")
@click.option("--bank", "-b", required=True, help="Example bank: ICL pool and LoRA data from its train split, scored on its test split.")
@click.option("--ks", default=",".join(map(str, curve.DEFAULT_KS)), show_default=True, help="ICL examples per prompt (0 = zero-shot).")
@click.option("--selectors", default=",".join(curve.DEFAULT_SELECTORS), show_default=True, help="ICL selectors, one curve each.")
@click.option(
    "--sizes",
    default="16,64,256,all",
    show_default=True,
    help="LoRA train-subset sizes, nested ('all' = the whole train split; '' = no LoRA).",
)
@click.option("--seeds", type=int, default=curve.DEFAULT_SEEDS, show_default=True, help="Training seeds per LoRA size.")
@click.option("--subset-seed", type=int, default=0, show_default=True, help="Seed of the shuffle whose prefixes are the subsets.")
@dataclass_options(SFTArgs, only=curve.TRAIN_FIELDS)
@click.option("--limit", type=int, default=None, help="Use only the first N test items.")
@click.option("--max-tokens", type=int, default=None, help="Reply budget (default 16 with labels, 256 without).")
@click.option(
    "--hf-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="HF checkpoint of the model (default: dequantise the GGUF).",
)
@engine_options
@pass_app
def command(
    app: AppContext,
    bank: str,
    ks: str,
    selectors: str,
    sizes: str,
    seeds: int,
    subset_seed: int,
    limit: int | None,
    max_tokens: int | None,
    hf_dir: Path | None,
    **kwargs: object,
) -> None:
    """ICL vs LoRA over the number of examples, on the same test items, with CIs, seeds and costs.

    Rerunning the same command reuses every finished answer and adapter (and resumes a
    cancelled training run from its checkpoint); Ctrl-C stops after the current step or answer.
    """
    train = {name: kwargs.pop(name) for name in curve.TRAIN_FIELDS}
    apply_engine_options(app, kwargs)
    if limit is not None and limit < 1:
        raise TunelabError(f"--limit must be >= 1 (got {limit})")
    spec = curve.CurveSpec(
        args_from(SFTArgs, train),
        curve.parse_ints(ks, "--ks"),
        tuple(parse_selectors(selectors)),
        curve.parse_sizes(sizes),
        seeds,
        subset_seed,
    )
    found = open_bank(app.conn, bank)
    test_set = bank_test_set(app.conn, found, limit)
    for warning in test_set.warnings:
        click.echo(f"warning: {warning}", err=True)
    params = greedy(max_tokens or default_max_tokens(found.labels))
    runner = ArmRunner(app.runtime, found)
    with ctrl_c_checkpoints() as cancel:
        result = curve.run_curve(runner, test_set, spec, params, hf_dir, show, cancel)
    click.echo(
        f"trained {len(result.trained)} adapter(s), reused {len(result.reused_adapters)}; "
        f"generated {result.generated} answer(s), reused {result.reused_answers}",
        err=True,
    )
    click.echo((result.report_dir / REPORT_MD).read_text(encoding="utf-8"))
    click.echo(f"report: {result.report_dir}", err=True)
