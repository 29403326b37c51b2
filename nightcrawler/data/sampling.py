"""Temporal sampling: video length -> frame indices (pure functions, the original's formulas, spec §2).

* Sparse ("uniform", segment-based; every model but the expert): ``seg = (L - 1) / T``; segment ``i`` spans
  ``[round(seg*i), round(seg*(i+1))]`` (both inclusive, neighbours share their boundary). Training draws one
  frame per segment (``rng.randint``); test view ``t`` of ``V`` takes ``round(seg*i) + int(seg/(V+1)*(t+1))``.
* Dense (the expert): a window of ``sampling_rate * T`` frames, ``T`` points of a float32 ``linspace`` across it,
  clamped to ``[0, L-1]`` and truncated.

``round`` is half-to-even (NumPy's and Python's), ``int`` truncates toward zero. Training draws use the
``random.Random``-style ``rng`` given (default: the ``random`` module), one call per segment in segment order,
so ``random.Random(seed)`` reproduces the original's draws after ``random.seed(seed)``.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

import torch


class _RandomLike(Protocol):
    def randint(self, a: int, b: int) -> int: ...

    def uniform(self, a: float, b: float) -> float: ...


def _check(num_video_frames: int, num_frames: int, view: int | None, num_views: int) -> None:
    if num_video_frames < 1:
        raise ValueError(
            f"a video needs at least 1 frame to sample from, got num_video_frames={num_video_frames}"
        )
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if view is not None and not 0 <= view < num_views:
        raise ValueError(f"view must be in [0, {num_views}), got {view}")


def uniform_ranges(num_video_frames: int, num_frames: int) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` frame range of each of the ``num_frames`` segments (training draws inside)."""
    _check(num_video_frames, num_frames, None, 1)
    seg = (num_video_frames - 1) / num_frames
    return [(round(seg * i), round(seg * (i + 1))) for i in range(num_frames)]


def uniform_indices(
    num_video_frames: int,
    num_frames: int,
    view: int | None = None,
    num_views: int = 1,
    rng: _RandomLike | None = None,
) -> list[int]:
    """Sparse sampling: ``num_frames`` indices into a video of ``num_video_frames`` frames.

    ``view=None`` is training (one random frame per segment from ``rng``); ``view=t`` is the deterministic
    temporal view ``t`` of ``num_views``. Short videos repeat frames (``L = 1`` gives all zeros).
    """
    _check(num_video_frames, num_frames, view, num_views)
    if view is None:
        rng = random if rng is None else rng
        return [rng.randint(a, b) for a, b in uniform_ranges(num_video_frames, num_frames)]
    seg = (num_video_frames - 1) / num_frames
    offset = int(seg / (num_views + 1) * (view + 1))
    return [round(seg * i) + offset for i in range(num_frames)]


def dense_start(
    num_video_frames: int,
    clip_size: int,
    view: int | None = None,
    num_views: int = 1,
    use_offset: bool = True,
    rng: _RandomLike | None = None,
) -> float:
    """First (float) frame of a dense window of ``clip_size`` frames (training: ``rng.uniform(0, delta)``)."""
    delta = max(num_video_frames - clip_size, 0)
    if view is None:
        return (random if rng is None else rng).uniform(0, delta)
    if not use_offset:
        return delta * view / num_views
    if num_views == 1:
        return float(math.floor(delta / 2))
    return float(view * math.floor(delta / (num_views - 1)))


def dense_indices(
    num_video_frames: int,
    num_frames: int,
    sampling_rate: int,
    view: int | None = None,
    num_views: int = 1,
    use_offset: bool = True,
    rng: _RandomLike | None = None,
) -> list[int]:
    """Dense sampling: ``num_frames`` indices spread over ``sampling_rate * num_frames`` consecutive frames.

    ``view=None`` is training (random start); otherwise the window of temporal view ``view`` of ``num_views``
    (``use_offset``: first view at the start, last near the end, one view centred; else ``delta*view/V``).
    The float32 ``linspace`` matches the original bit for bit (float64 differs in rare cases).
    """
    _check(num_video_frames, num_frames, view, num_views)
    if sampling_rate < 1:
        raise ValueError(f"sampling_rate must be >= 1, got {sampling_rate}")
    clip_size = sampling_rate * num_frames
    start = dense_start(num_video_frames, clip_size, view, num_views, use_offset, rng)
    points = torch.linspace(start, start + clip_size - 1, num_frames, dtype=torch.float32)
    return points.clamp(0, num_video_frames - 1).long().tolist()


# test-time frame-order controls (TEST.FRAME_CONTROL) -> the suffix of their PKLs
FRAME_CONTROLS = {"": "", "shuffle": "_shuffle", "one_frame": "_oneframe"}


def time_permutation(num_frames: int, seed: int | str) -> list[int]:
    """A permutation of ``range(num_frames)`` drawn from ``random.Random(seed)``; never the identity when
    ``num_frames > 1`` (a draw that happens to be the identity is rotated by one)."""
    order = list(range(num_frames))
    random.Random(seed).shuffle(order)
    if num_frames > 1 and order == sorted(order):
        order = order[1:] + order[:1]
    return order


def control_frames(indices: list[int], control: str, seed: int | str = 0) -> list[int]:
    """A test clip's frame indices under a frame-order control: ``""`` as sampled; ``"shuffle"`` permuted in
    time by :func:`time_permutation` of ``seed``; ``"one_frame"`` the middle sampled frame, ``len(indices)`` times."""
    if control not in FRAME_CONTROLS:
        raise ValueError(f"frame control must be one of {list(FRAME_CONTROLS)}, got {control!r}")
    if control == "one_frame":
        return [indices[len(indices) // 2]] * len(indices)
    if control == "shuffle":
        return [indices[i] for i in time_permutation(len(indices), seed)]
    return list(indices)
