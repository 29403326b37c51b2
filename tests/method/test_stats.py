"""Intervals (bootstrap and seed-level t), paired deltas, the sign-flip test and McNemar's exact test of the
method benchmark."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from nightcrawler.method.stats import (
    binomial_two_sided,
    mcnemar_exact,
    paired_delta_interval,
    sign_flip_p,
    t_interval,
    t_quantile_two_sided,
    top1_interval,
)


def test_binomial_two_sided_by_hand():
    # n = 5, k = 0: 2 * (1/2)^5
    assert binomial_two_sided(0, 5) == pytest.approx(0.0625)
    # n = 10, k = 3: 2 * (1 + 10 + 45 + 120) / 1024
    assert binomial_two_sided(3, 10) == pytest.approx(2 * 176 / 1024)
    assert binomial_two_sided(5, 10) == 1.0 and binomial_two_sided(0, 0) == 1.0
    # large n does not overflow and stays a probability
    p = binomial_two_sided(900, 2000)
    assert 0.0 < p < 1e-4 and math.isfinite(p)


def test_mcnemar_counts_discordant_videos_over_seeds():
    before = [[1, 1, 0, 0, 1], [1, 0, 0]]
    after = [[1, 0, 1, 1, 1], [1, 1, 1]]
    p, lost, gained = mcnemar_exact(before, after)
    assert (lost, gained) == (1, 4)
    assert p == pytest.approx(binomial_two_sided(1, 5))


def test_interval_mean_is_the_mean_of_the_seeds_and_covers_it():
    rng = np.random.default_rng(0)
    runs = [rng.random(300) < q for q in (0.6, 0.7, 0.65)]
    ci = top1_interval(runs)
    assert ci.mean == pytest.approx(np.mean([r.mean() for r in runs]))
    assert ci.lo < ci.mean < ci.hi
    assert 0.02 < ci.hi - ci.lo < 0.2
    # deterministic given its seed, and a perfect run has no spread
    assert top1_interval(runs) == ci
    perfect = top1_interval([np.ones(50, bool), np.ones(40, bool)])
    assert (perfect.mean, perfect.lo, perfect.hi) == (1.0, 1.0, 1.0)


def test_more_videos_give_narrower_intervals():
    rng = np.random.default_rng(1)
    small = top1_interval([rng.random(40) < 0.7 for _ in range(3)])
    large = top1_interval([rng.random(400) < 0.7 for _ in range(3)])
    assert (large.hi - large.lo) < (small.hi - small.lo) / 2


def test_paired_delta_cancels_shared_difficulty():
    rng = np.random.default_rng(2)
    base = [rng.random(300) < 0.6 for _ in range(3)]
    same = paired_delta_interval(base, base)
    assert (same.mean, same.lo, same.hi) == (0.0, 0.0, 0.0)
    # "after" fixes 15 of each seed's wrong videos: a clear, consistent gain of 5 points
    after = []
    for r in base:
        a = r.copy()
        a[np.flatnonzero(~r)[:15]] = True
        after.append(a)
    d = paired_delta_interval(base, after)
    assert d.mean == pytest.approx(0.05)
    assert d.lo > 0.02 and d.hi < 0.08
    unpaired_width = (top1_interval(after).hi - top1_interval(after).lo) + (
        top1_interval(base).hi - top1_interval(base).lo
    )
    assert d.hi - d.lo < unpaired_width / 2


def test_paired_runs_must_match():
    with pytest.raises(ValueError, match="same seeds and the same videos"):
        paired_delta_interval([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="at least one run"):
        top1_interval([])


@pytest.mark.parametrize(
    ("level", "df", "expected"),
    [
        (0.95, 1, 12.706205),
        (0.95, 2, 4.302653),
        (0.95, 4, 2.776445),
        (0.95, 9, 2.262157),
        (0.95, 30, 2.042272),
        (0.90, 2, 2.919986),
        (0.99, 5, 4.032143),
        (0.95, 120, 1.979930),
    ],
)
def test_t_quantile_matches_the_tables(level, df, expected):
    assert t_quantile_two_sided(level, df) == pytest.approx(expected, abs=1e-6)


def test_t_quantile_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 41), 75, 200]:
        for level in (0.5, 0.8, 0.9, 0.95, 0.99):
            assert t_quantile_two_sided(level, df) == pytest.approx(
                stats.t.ppf((1 + level) / 2, df), abs=1e-8
            )


def test_t_quantile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="df"):
        t_quantile_two_sided(0.95, 0)
    with pytest.raises(ValueError, match="df"):
        t_quantile_two_sided(0.95, 2.5)
    with pytest.raises(ValueError, match="level"):
        t_quantile_two_sided(1.0, 3)


def test_t_interval_by_hand():
    ci = t_interval([0.6, 0.7, 0.65])
    half = 4.302653 * 0.05 / math.sqrt(3)  # s = 0.05
    assert (ci.mean, ci.lo, ci.hi) == pytest.approx((0.65, 0.65 - half, 0.65 + half), abs=1e-6)
    ten = t_interval(np.arange(10.0), level=0.95)  # s = sqrt(110 / 12)
    assert ten.hi - ten.mean == pytest.approx(2.262157 * math.sqrt(110 / 12) / math.sqrt(10), abs=1e-5)
    # no spread: the mean itself; one seed: no interval
    assert t_interval([0.4, 0.4, 0.4]).as_list() == pytest.approx([0.4, 0.4])
    one = t_interval([0.7])
    assert one.mean == 0.7 and math.isnan(one.lo) and math.isnan(one.hi)
    with pytest.raises(ValueError, match="non-empty"):
        t_interval([])
    with pytest.raises(ValueError, match="finite"):
        t_interval([0.5, float("nan")])


def _sign_flip_by_fractions(deltas: list[str]) -> float:
    """Reference: every sign pattern, in exact rational arithmetic."""
    d = [Fraction(x) for x in deltas]
    observed = abs(sum(d))
    patterns = list(itertools.product((1, -1), repeat=len(d)))
    return sum(abs(sum(s * x for s, x in zip(p, d))) >= observed for p in patterns) / len(patterns)


def test_sign_flip_p_exact_by_hand():
    # sums of the 8 patterns of (1, 2, 3): +-6, +-4, +-2, 0, 0: |sum| >= 6 for 2 of 8
    assert sign_flip_p([1, 2, 3]) == 0.25
    assert sign_flip_p([0.02, 0.05, 0.01]) == 0.25  # the floor with 3 seeds, however large the gain
    assert sign_flip_p([-1, -2, -3]) == 0.25  # two-sided
    assert sign_flip_p([1, 1, 1, 1, 1]) == pytest.approx(2 / 32)
    assert sign_flip_p([1, -1]) == 1.0 and sign_flip_p([0, 0, 0]) == 1.0
    assert sign_flip_p([0.3]) == 1.0  # one seed
    with pytest.raises(ValueError, match="non-empty"):
        sign_flip_p([])


def test_sign_flip_p_counts_ties_despite_rounding():
    # 0.1 + 0.2 - 0.3 + 0.3 ties 0.1 + 0.2 + 0.3 - 0.3 exactly, not in floating point
    for deltas in (["0.1", "0.2", "-0.3", "0.3"], ["0.1", "0.2", "0.3", "-0.1", "0.05", "0.15"]):
        assert sign_flip_p([float(x) for x in deltas]) == pytest.approx(_sign_flip_by_fractions(deltas))


def test_sign_flip_p_monte_carlo_beyond_sixteen_seeds():
    # 17 seeds, three of them +1 and the rest 0: |mean| reaches the observed only with all three of one sign,
    # so p is exactly 2 / 2^3 = 0.25 (the zeros' signs do not matter)
    p = sign_flip_p([1, 1, 1] + [0] * 14)
    assert p != 0.25 and p == pytest.approx(0.25, abs=0.006)  # Monte Carlo, 100 000 draws (SE 0.0014)
    assert sign_flip_p([1] + [0] * 16) == 1.0
    assert p == sign_flip_p([1, 1, 1] + [0] * 14)  # seeded: the same p twice
    # Monte Carlo against enumeration on the same 12 deltas
    rng = np.random.default_rng(5)
    deltas = rng.normal(0.02, 0.05, size=12)
    exact = sign_flip_p(deltas)
    assert sign_flip_p(deltas, exact_max=0) == pytest.approx(exact, abs=0.01)
