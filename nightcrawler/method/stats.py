"""Statistics of a method benchmark: top-1 over seeds with bootstrap intervals, paired step-to-step deltas and
McNemar's exact test.

A result is a set of *runs* (one per seed), each a boolean vector "video i classified right" over that seed's
test videos. Intervals come from a two-level bootstrap of those runs: draw the seeds with replacement, then,
within each drawn seed, its videos with replacement; the statistic is the mean over the drawn seeds of the
top-1 of the drawn videos. The 2.5 and 97.5 percentiles of ``resamples`` such draws are the 95 % interval. The
variation between seeds (training noise, a new data set) and between videos (a finite test set) both enter.
A paired delta applies the same draw to both steps, so the videos' shared difficulty cancels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 4000
DEFAULT_BOOTSTRAP_SEED = 20221


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float

    def as_list(self) -> list[float]:
        return [self.lo, self.hi]


def _as_runs(runs: Sequence[Sequence[bool]] | Sequence[np.ndarray]) -> list[np.ndarray]:
    out = [np.asarray(r, dtype=np.float64) for r in runs]
    if not out or any(r.ndim != 1 or r.size == 0 for r in out):
        raise ValueError("need at least one run, each a non-empty vector of per-video outcomes")
    return out


def _bootstrap_means(runs: list[np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """``resamples`` two-level bootstrap means of the runs' top-1 (seeds, then videos within a seed)."""
    rng = np.random.default_rng(seed)
    n = len(runs)
    out = np.empty(resamples)
    seed_draws = rng.integers(n, size=(resamples, n))
    video_draws = [rng.integers(r.size, size=(resamples, r.size)) for r in runs]
    per_seed = np.stack([r[d].mean(1) for r, d in zip(runs, video_draws)], axis=1)  # (resamples, n)
    out[:] = np.take_along_axis(per_seed, seed_draws, axis=1).mean(1)
    return out


def top1_interval(
    runs: Sequence[Sequence[bool]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> Interval:
    """Mean top-1 over runs and its 95 % two-level bootstrap interval."""
    r = _as_runs(runs)
    mean = float(np.mean([x.mean() for x in r]))
    boots = _bootstrap_means(r, resamples, seed)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Interval(mean, float(min(lo, mean)), float(max(hi, mean)))


def paired_delta_interval(
    before: Sequence[Sequence[bool]],
    after: Sequence[Sequence[bool]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> Interval:
    """Mean over runs of top-1(after) - top-1(before) on the same videos, with its paired 95 % interval."""
    b, a = _as_runs(before), _as_runs(after)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError("paired runs must cover the same seeds and the same videos")
    diff = [y - x for x, y in zip(b, a)]
    mean = float(np.mean([d.mean() for d in diff]))
    boots = _bootstrap_means(diff, resamples, seed)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Interval(mean, float(min(lo, mean)), float(max(hi, mean)))


def mcnemar_exact(
    before: Sequence[Sequence[bool]], after: Sequence[Sequence[bool]]
) -> tuple[float, int, int]:
    """Two-sided exact McNemar test pooled over runs: (p, videos only `before` got right, only `after` did)."""
    b = np.concatenate([np.asarray(x, dtype=bool) for x in before])
    a = np.concatenate([np.asarray(x, dtype=bool) for x in after])
    if a.shape != b.shape:
        raise ValueError("paired runs must cover the same videos")
    lost, gained = int(np.sum(b & ~a)), int(np.sum(~b & a))
    return binomial_two_sided(min(lost, gained), lost + gained), lost, gained


def binomial_two_sided(k: int, n: int) -> float:
    """P(X <= k or X >= n - k) for X ~ Binomial(n, 1/2), k <= n/2: exact, in integer arithmetic."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int: exact rounding, no float overflow
