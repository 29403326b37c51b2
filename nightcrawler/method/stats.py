"""Statistics of a method benchmark: top-1 over seeds with seed-level t intervals and two-level bootstrap
intervals, paired step-to-step deltas with a sign-flip permutation test over seeds, and McNemar's exact test.

A result is a set of *runs* (one per seed), each a boolean vector "video i classified right" over that seed's
test videos.

- :func:`t_interval`: the Student-t interval of the mean of per-seed values (top-1s or paired deltas). With
  few seeds it is the honest one: the bootstrap below covers about 89 % at a nominal 95 % with 3 seeds.
- :func:`top1_interval` / :func:`paired_delta_interval`: a two-level bootstrap of the runs: draw the seeds with
  replacement, then, within each drawn seed, its videos with replacement; the statistic is the mean over the
  drawn seeds of the top-1 of the drawn videos, and the 2.5 and 97.5 percentiles of ``resamples`` such draws
  are the 95 % interval. A paired delta applies the same draw to both steps, so the videos' shared difficulty
  cancels.
- :func:`sign_flip_p`: exact two-sided permutation p of per-seed paired deltas (seed-level, like the t
  interval; its floor is ``2 / 2^seeds``).
- :func:`mcnemar_exact`: discordant videos pooled over seeds; it ignores training noise between seeds, so it is
  a video-level secondary figure only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 4000
DEFAULT_BOOTSTRAP_SEED = 20221
SIGN_FLIP_EXACT_MAX = 16  # seeds up to which sign_flip_p enumerates every pattern
SIGN_FLIP_DRAWS = 100_000  # Monte Carlo patterns beyond


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


def t_quantile_two_sided(level: float, df: int) -> float:
    """The ``t`` with ``P(|T| <= t) = level`` for Student's T with ``df`` (an integer >= 1) degrees of freedom,
    i.e. the ``(1 + level) / 2`` quantile, e.g. 4.302653 for level 0.95 and df 2.

    ``P(|T| <= t)`` has a closed form for integer ``df`` (a finite series in ``theta = atan(t / sqrt(df))``,
    Abramowitz & Stegun 26.7.3-4) that rises monotonically in ``theta``; bisection on ``theta`` inverts it
    to about 1e-12."""
    if int(df) != df or df < 1:
        raise ValueError(f"df must be an integer >= 1, not {df}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), not {level}")
    lo, hi = 0.0, math.pi / 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central_probability(mid, int(df)) < level else (lo, mid)
        if hi - lo < 1e-15:
            break
    return math.sqrt(df) * math.tan((lo + hi) / 2)


def _t_central_probability(theta: float, df: int) -> float:
    """``P(|T| <= sqrt(df) tan(theta))`` for integer ``df``: the finite series of A&S 26.7.3 (odd df) and 26.7.4
    (even df)."""
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    term = total = math.cos(theta)
    for k in range(1, (df - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + s * total)


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of per-seed values and its seed-level Student-t interval ``mean -+ t * s / sqrt(n)``, with ``s``
    the sample standard deviation over the ``n`` seeds and ``t`` the two-sided ``level`` quantile with
    ``n - 1`` degrees of freedom. The seeds are the only source of variation it sees (each seed's value, e.g.
    its top-1 on its own test set, already holds that test set's noise).

    With one seed there is no spread to estimate: both bounds are NaN (``benchmark.json`` writes null)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("need a non-empty vector of finite per-seed values")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, math.nan, math.nan)
    half = t_quantile_two_sided(level, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half)


def sign_flip_p(
    deltas: Sequence[float],
    *,
    exact_max: int = SIGN_FLIP_EXACT_MAX,
    draws: int = SIGN_FLIP_DRAWS,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> float:
    """Two-sided sign-flip permutation p of paired per-seed deltas (null: each delta's sign is a coin flip).

    p is the fraction of sign patterns whose ``|mean|`` is at least the observed ``|mean|`` (less a relative
    tolerance of 1e-9, so that ties in exact arithmetic count). Up to ``exact_max`` seeds all ``2^n``
    patterns are enumerated (the observed one among them); beyond, ``draws`` random patterns from a fixed
    ``seed`` give ``(hits + 1) / (draws + 1)``, the observed pattern counted once.

    The smallest possible p is ``2 / 2^n`` (every delta of one sign): 0.25 with 3 seeds, 0.0625 with 5, so
    fewer than 6 seeds can never reach p < 0.05. One seed gives p = 1."""
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError("need a non-empty vector of finite per-seed deltas")
    observed = abs(d.sum())
    tol = 1e-9 * max(float(np.abs(d).sum()), 1e-300)
    if d.size <= exact_max:
        bits = (np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1
        sums = (1 - 2 * bits) @ d
        return float(np.mean(np.abs(sums) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits, left = 0, draws
    while left > 0:
        n = min(left, 10_000)
        signs = rng.integers(0, 2, size=(n, d.size)) * 2 - 1
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
        left -= n
    return (hits + 1) / (draws + 1)
