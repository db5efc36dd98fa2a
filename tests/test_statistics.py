"""Confidence intervals and paired tests on constructed cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.eval import statistics as st


def test_bootstrap_ci_matches_the_normal_approximation() -> None:
    values = [1.0] * 50 + [0.0] * 50
    ci = st.bootstrap_ci(values, seed=0)
    half = 1.96 * math.sqrt(0.25 / 100)  # 0.098
    assert ci.value == 0.5
    assert ci.low == pytest.approx(0.5 - half, abs=0.02)
    assert ci.high == pytest.approx(0.5 + half, abs=0.02)


def test_bootstrap_ci_is_degenerate_for_constant_values_and_seeded() -> None:
    assert st.bootstrap_ci([1.0, 1.0, 1.0]) == st.Interval(1.0, 1.0, 1.0)
    values = list(np.random.default_rng(3).random(30))
    assert st.bootstrap_ci(values, seed=7) == st.bootstrap_ci(values, seed=7)
    with pytest.raises(TunelabError):
        st.bootstrap_ci([])


def test_mcnemar_exact_p_values_by_hand() -> None:
    # 8 items only A got right, 0 only B: p = 2 * C(8,0) / 2^8 = 1/128
    a = [1] * 8 + [1] * 5 + [0] * 3
    b = [0] * 8 + [1] * 5 + [0] * 3
    test = st.mcnemar(a, b)
    assert test.discordant == (8, 0)
    assert test.p_value == pytest.approx(1 / 128)
    assert test.significant and test.verdict == "significant"
    assert test.difference.value == pytest.approx(8 / 16)
    # 5 vs 1 discordant: p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14/64
    a = [1] * 5 + [0] * 1 + [1] * 4
    b = [0] * 5 + [1] * 1 + [1] * 4
    test = st.mcnemar(a, b)
    assert test.discordant == (5, 1)
    assert test.p_value == pytest.approx(14 / 64)
    assert test.verdict == "not significant"


def test_mcnemar_identical_arms_and_bad_input() -> None:
    assert st.mcnemar([1, 0, 1], [1, 0, 1]).p_value == 1.0
    with pytest.raises(TunelabError):
        st.mcnemar([0.5, 1], [1, 1])
    with pytest.raises(TunelabError):
        st.mcnemar([1, 0], [1])


def test_paired_bootstrap_detects_a_consistent_shift_but_not_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(40)
    shifted = st.paired_bootstrap(base + 0.1, base)
    assert shifted.difference.value == pytest.approx(0.1)
    assert shifted.difference.low == pytest.approx(0.1) and shifted.difference.high == pytest.approx(0.1)
    assert shifted.significant
    # two independent draws from the same distribution: no real difference
    noise = st.paired_bootstrap(rng.random(40), rng.random(40))
    assert noise.difference.low < 0 < noise.difference.high
    assert not noise.significant
    assert st.paired_bootstrap([0.3, 0.4], [0.3, 0.4]).p_value == 1.0


def test_paired_test_picks_mcnemar_for_binary_scores() -> None:
    assert st.paired_test([1, 0], [0, 0], binary=True).method.startswith("McNemar")
    assert st.paired_test([0.2, 0.3], [0.1, 0.3], binary=False).method == "paired bootstrap"


def test_wilson_interval_by_hand() -> None:
    # 8/10, z = 1.96: centre = (0.8 + 0.19208) / 1.38416, half-width = 1.96 * sqrt(0.016 + 0.009604) / 1.38416
    ci = st.wilson_interval(8, 10)
    assert ci.value == 0.8
    assert ci.low == pytest.approx(0.4902, abs=1e-4)
    assert ci.high == pytest.approx(0.9433, abs=1e-4)
    zero = st.wilson_interval(0, 5)
    assert zero.low == 0.0 and 0.4 < zero.high < 0.5  # 0/5: [0, 0.434]
    assert math.isnan(st.wilson_interval(0, 0).value)
    assert st.wilson_interval(1.5, 3).value == 0.5  # ties count as half a win


def test_pairwise_win_rates_pool_both_orders_and_count_ties_half() -> None:
    votes = [("x", "y", "left"), ("y", "x", "right"), ("y", "x", "left"), ("x", "y", "tie"), ("x", "y", "both_bad")]
    (rate,) = st.pairwise_win_rates(votes)
    assert (rate.a, rate.b) == ("x", "y")
    assert (rate.wins, rate.losses, rate.ties, rate.both_bad, rate.n) == (2, 1, 1, 1, 5)
    assert rate.rate == st.wilson_interval(3.0, 5)
    assert rate.rate.value == pytest.approx(0.6)
