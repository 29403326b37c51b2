"""Intervals, paired deltas and McNemar's exact test of the method benchmark."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nightcrawler.method.stats import (
    binomial_two_sided,
    mcnemar_exact,
    paired_delta_interval,
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
