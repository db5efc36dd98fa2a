"""How sure we are: bootstrap intervals per arm, paired tests between arms, Wilson win-rates.

Every arm answers the *same* test items, so differences are tested paired (per-item), which is
far more sensitive than comparing two independent intervals. All resampling is seeded so a
report is reproducible bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tunelab.errors import TunelabError

CONFIDENCE = 0.95
RESAMPLES = 2000
ALPHA = 1 - CONFIDENCE


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """Arm A minus arm B on the same items, and whether that difference could be chance."""

    difference: Interval
    p_value: float
    method: str
    """"paired bootstrap" or "McNemar (exact)"."""
    n: int
    discordant: tuple[int, int] | None = None
    """McNemar only: items only A got right, items only B got right."""

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def verdict(self) -> str:
        return "significant" if self.significant else "not significant"

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["significant"] = self.significant
        return data


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise TunelabError("no scored items to compute an interval from")
    return array


def bootstrap_ci(values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES) -> Interval:
    """Mean with a 95 % percentile-bootstrap interval (items resampled with replacement)."""
    array = _check(values)
    idx = _rng(seed).integers(0, array.size, size=(resamples, array.size))
    means = array[idx].mean(axis=1)
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return Interval(float(array.mean()), float(low), float(high))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], seed: int = 0, resamples: int = RESAMPLES) -> PairedTest:
    """Mean of per-item differences a - b, its 95 % interval, and a two-sided bootstrap p-value.

    The p-value is twice the share of resampled mean differences on the far side of zero
    (bounded to [1/resamples, 1]); with every difference zero it is 1.
    """
    x, y = _check(a), _check(b)
    if x.size != y.size:
        raise TunelabError(f"paired test needs the same items in both arms ({x.size} vs {y.size})")
    diff = x - y
    idx = _rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    means = diff[idx].mean(axis=1)
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    if not diff.any():
        p = 1.0
    else:
        tail = min(np.mean(means <= 0), np.mean(means >= 0))
        p = float(min(1.0, max(2 * tail, 1 / resamples)))
    return PairedTest(Interval(float(diff.mean()), float(low), float(high)), p, "paired bootstrap", int(diff.size))


def mcnemar(a: Sequence[float], b: Sequence[float], seed: int = 0) -> PairedTest:
    """Exact McNemar test for two arms' right/wrong (1/0) answers on the same items.

    Only discordant items count: b01 = A right & B wrong, b10 = A wrong & B right; under "no
    difference" each discordant item is a fair coin, so p = two-sided binomial tail. The
    interval on the accuracy difference comes from the paired bootstrap.
    """
    x, y = _check(a), _check(b)
    if not set(np.unique(np.concatenate([x, y]))) <= {0.0, 1.0}:
        raise TunelabError("McNemar's test needs right/wrong (0/1) scores")
    boot = paired_bootstrap(a, b, seed=seed)
    only_a = int(np.sum((x == 1) & (y == 0)))
    only_b = int(np.sum((x == 0) & (y == 1)))
    return PairedTest(
        boot.difference, binomial_two_sided(min(only_a, only_b), only_a + only_b), "McNemar (exact)", int(x.size), (only_a, only_b)
    )


def binomial_two_sided(k: int, n: int) -> float:
    """P(X <= k or X >= n - k) for X ~ Binomial(n, 1/2), k <= n/2; exact integer arithmetic."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def binomial_greater(k: int, n: int, p0: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p0): the exact one-sided p-value of k successes against rate p0.

    scipy's survival function (regularised incomplete beta) stays exact where summing
    comb(n, i) p^i (1-p)^(n-i) by hand would overflow a float (n in the thousands).
    """
    if n <= 0 or k <= 0:
        return 1.0
    from scipy.stats import binom

    return float(min(1.0, binom.sf(k - 1, n, p0)))


def paired_test(a: Sequence[float], b: Sequence[float], binary: bool, seed: int = 0) -> PairedTest:
    """McNemar for right/wrong metrics, the paired bootstrap for graded ones."""
    return mcnemar(a, b, seed=seed) if binary else paired_bootstrap(a, b, seed=seed)


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> Interval:
    """Win-rate with the Wilson score interval (sound at small n and at 0 % or 100 %).

    `successes` may be fractional: a tie counts as half a win for each side.
    """
    if n <= 0:
        return Interval(float("nan"), 0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class WinRate:
    """How often arm `a` beat arm `b` in side-by-side votes (ties and both-bad count half)."""

    a: str
    b: str
    wins: int
    losses: int
    ties: int
    both_bad: int
    rate: Interval

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties + self.both_bad


def pairwise_win_rates(votes: Iterable[tuple[str, str, str]]) -> list[WinRate]:
    """Win-rate of each arm pair from (left arm, right arm, vote) triples, with Wilson intervals.

    Left/right position is forgotten: the pair is sorted by name, so A-vs-B and B-vs-A votes pool.
    """
    counts: dict[tuple[str, str], list[int]] = {}
    for left, right, vote in votes:
        a, b = sorted((left, right))
        tally = counts.setdefault((a, b), [0, 0, 0, 0])
        if vote in ("tie", "both_bad"):
            tally[2 if vote == "tie" else 3] += 1
        else:
            winner = left if vote == "left" else right
            tally[0 if winner == a else 1] += 1
    rates = []
    for (a, b), (wins, losses, ties, both_bad) in sorted(counts.items()):
        n = wins + losses + ties + both_bad
        rates.append(WinRate(a, b, wins, losses, ties, both_bad, wilson_interval(wins + 0.5 * (ties + both_bad), n)))
    return rates
