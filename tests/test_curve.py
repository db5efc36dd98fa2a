"""Learning-curve statistics and settings on constructed comparisons (no model): points, seed spread,
crossover against the best ICL arm, prompt cost and break-even, the report section and plot."""

from __future__ import annotations

import json

import pytest

from tunelab.errors import TunelabError
from tunelab.eval.curve_summary import LORA, ZERO_SHOT, CurveArm, curve_summary
from tunelab.eval.metrics import score
from tunelab.eval.report import CURVE_PNG, REPORT_JSON, REPORT_MD, write_report
from tunelab.eval.summary import summarize
from tunelab.finetune.args import SFTArgs
from tunelab.runtime.compare import Progress
from tunelab.runtime.curve import CurveSpec, GridClock, parse_sizes, spec_from_text
from tunelab.stores.comparisons import ComparisonItem, ComparisonStore, ItemResult

LABELS = ["negative", "positive"]
N = 40


def _summary(conn, hits: dict[str, int], prompt_tokens: dict[str, int], ttft: dict[str, float]):
    """Arms right on their first `hits[arm]` items (references alternate labels), scored by the real metrics."""
    store = ComparisonStore(conn)
    items = [ComparisonItem(i, str(i), f"review {i}", LABELS[i % 2]) for i in range(N)]
    comparison = store.open("demo", "key", {"labels": LABELS, "test_source": "constructed", "sampler": {}}, items, list(hits))
    for arm, right in hits.items():
        for item in items:
            output = item.reference if item.position < right else LABELS[(item.position + 1) % 2]
            store.add_result(
                comparison.id,
                "fp",
                ItemResult(
                    arm,
                    item.position,
                    output,
                    score(output, item.reference, LABELS),
                    prompt_tokens[arm],
                    1,
                    ttft[arm],
                    ttft[arm] + 10,
                    50.0,
                    "stop",
                ),
            )
    return summarize(store.get(comparison.id), items, store.results(comparison.id), "accuracy")


ARMS = {  # arm: (hits of 40, prompt tokens, TTFT ms)
    "base": (20, 40, 50.0),
    "base+jaccard@1": (24, 90, 87.5),
    "base+jaccard@4": (26, 240, 200.0),
    "lora:n4-s0": (22, 40, 52.0),
    "lora:n4-s1": (30, 40, 52.0),
    "lora:n16-s0": (38, 40, 50.0),
    "lora:n16-s1": (40, 40, 50.0),
}
PLACES = [
    CurveArm("base", ZERO_SHOT, 0),
    CurveArm("base+jaccard@1", "jaccard", 1),
    CurveArm("base+jaccard@4", "jaccard", 4),
    CurveArm("lora:n4-s0", LORA, 4, 0, 30.0, 3000.0),
    CurveArm("lora:n4-s1", LORA, 4, 1, 34.0, 3400.0),
    CurveArm("lora:n16-s0", LORA, 16, 0, 75.0, 9000.0),
    CurveArm("lora:n16-s1", LORA, 16, 1, 75.0, 9000.0),
]


def _constructed(conn):
    return _summary(conn, {a: v[0] for a, v in ARMS.items()}, {a: v[1] for a, v in ARMS.items()}, {a: v[2] for a, v in ARMS.items()})


def test_points_seed_spread_crossover_and_break_even(conn) -> None:
    summary = _constructed(conn)
    curve = curve_summary(summary, PLACES)
    assert [(p.family, p.x) for p in curve.points] == [(ZERO_SHOT, 0), ("jaccard", 1), ("jaccard", 4), (LORA, 4), (LORA, 16)]
    n4 = next(p for p in curve.points if (p.family, p.x) == (LORA, 4))
    assert n4.seed_values == [22 / 40, 30 / 40] and n4.value.value == pytest.approx(26 / 40)
    assert n4.seed_sd == pytest.approx(0.1) and n4.train_seconds == 32.0 and n4.train_tokens == 3200.0
    assert n4.value.low < n4.value.value < n4.value.high
    assert curve.best_icl == "base+jaccard@4"
    # n=4: seed mean 65% = jaccard@4's 65%, not above; n=16: 97.5% vs 65%, significant
    assert curve.crossover == 16 and curve.crossover_test is not None and curve.crossover_test.significant
    assert curve.ms_per_prompt_token == pytest.approx(0.75)  # TTFT = 20 + 0.75 * prompt tokens over the base arms
    n16 = next(b for b in curve.break_even if b.lora_x == 16)
    assert n16.ttft_saved_ms == pytest.approx(150.0) and n16.prompt_tokens_saved == 200
    assert n16.queries == pytest.approx(75.0 * 1000 / 150.0)
    assert any(line.startswith("Crossover at n=16") for line in curve.lines)
    assert any("Seed spread: widest at n=4, 55.0% to 75.0% over 2 training seeds" in line for line in curve.lines)


def test_no_crossover_says_none_within_the_data(conn) -> None:
    summary = _constructed(conn)
    without_big = [p for p in PLACES if p.x != 16 or p.family != LORA]
    curve = curve_summary(summary, without_big)
    assert curve.crossover is None
    assert any(line.startswith("Crossover: none within the data") for line in curve.lines)


def test_report_has_the_curve_section_and_plot(conn, settings) -> None:
    summary = _constructed(conn)
    summary.curve = curve_summary(summary, PLACES)
    path = write_report(settings, summary)
    markdown = (path / REPORT_MD).read_text()
    assert "## Learning curve" in markdown and "| lora | n train 16 | 97.5% [" in markdown
    assert "65.0% ± 10.0 (55.0%-75.0%, 2 seeds)" in markdown
    assert "0.75 ms of TTFT per prompt token" in markdown and "| 16 | base+jaccard@4 | 200 | 150 | 75 | 500 |" in markdown
    assert (path / CURVE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((path / REPORT_JSON).read_text())
    assert report["curve"]["crossover"] == 16 and report["curve"]["points"][3]["seed_sd"] == pytest.approx(0.1)


def test_settings_from_text_and_flags() -> None:
    spec, limit = spec_from_text("ks=0,4,1 selectors=jaccard sizes=8,all seeds=2 epochs=1 limit=5")
    assert spec.ks == (0, 1, 4) and spec.selectors == ("jaccard",) and spec.sizes == (8, None) and spec.seeds == 2
    assert spec.args.epochs == 1.0 and limit == 5
    assert spec_from_text("")[0].sizes == (16, 64, 256, None)
    assert parse_sizes("") == ()
    for bad in ("ks=a", "steps=3", "sizes=1", "epochs=x", "limit=0", "oops"):
        with pytest.raises(TunelabError):
            spec_from_text(bad)
    with pytest.raises(TunelabError, match="epochs budget"):
        CurveSpec(SFTArgs(max_steps=3))


def test_grid_eta_waits_for_a_measured_rate() -> None:
    clock = GridClock(answers_total=4, train_units=10.0)
    assert clock.eta() is None
    clock.answered(Progress("base", 0, 1, 4, reused=True))
    assert clock.eta() is None  # a reused answer measures nothing
    clock.answered(Progress("base", 1, 2, 4, reused=False))
    partial = clock.eta()  # training not measured yet: the answers left, shown as a lower bound
    assert partial is not None and not partial.complete and partial.seconds == pytest.approx(2 * clock.answer_seconds)
    assert partial.describe().startswith("ETA >= ") and "not timed yet" in partial.describe()
    clock.trained(5.0, 10.0)  # 2 s per example-epoch
    eta = clock.eta()
    assert eta is not None and eta.complete and eta.seconds == pytest.approx(2 * clock.answer_seconds + 5.0 * 2.0)
    assert eta.describe() == f"ETA {eta.seconds:.0f}s"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ks", "1,x"], "--ks must be comma-separated"),
        (["--sizes", "1,all"], "n >= 2"),
        (["--seeds", "0"], "seeds must be >= 1"),
        (["--epochs", "0"], "epochs must be > 0"),
        ([], "unknown bank 'nope'"),
    ],
)
def test_cli_refuses_bad_settings_with_one_line(flags: list[str], message: str) -> None:
    from click.testing import CliRunner

    from tunelab.cli import cli

    result = CliRunner().invoke(cli, ["curve", "--bank", "nope", *flags])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
