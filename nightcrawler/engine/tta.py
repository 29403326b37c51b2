"""Test-time augmentation settings: parsing ``"VxC[@ENHANCEMENT]"``, finding which clips of a larger setting a
smaller one reuses, grouping settings into decoding passes (one decode per video serving several view/crop
subsets and enhancements), and aggregating clip outputs per video.

Clips of one video are enumerated view-major, crop-minor (clip ``t * C + s``), as the original. A setting
``V' x C'`` is served by the clips of a decoded ``V x C`` setting when each of its temporal views samples the
same frames as one of the decoded views for every video length, and each of its crops is one of the decoded
crops (the single crop of ``C = 1`` is the centre crop, spatial index 1 of ``C = 3``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from nightcrawler.data.enhance import Enhancement, canonical, setting_enhancement

AGGREGATIONS = ("sum", "max", "mean")
CENTRE_CROP = 1  # spatial index of the single crop of C = 1 among the crops of C = 3
_SETTING_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*(?:@\s*(\S.*?))?\s*$")

# A temporal sampler: (video length, views, view index) -> frame indices of that view.
ViewIndexFn = Callable[[int, int, int], Sequence[int]]


@dataclass(frozen=True)
class TTASetting:
    """``views`` temporal views x ``crops`` spatial crops of frames enhanced with ``enhancement``."""

    views: int
    crops: int
    enhancement: Enhancement

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ValueError(f"TTA setting needs at least one temporal view, got {self.views}")
        if self.crops not in (1, 3):
            raise ValueError(f"TTA setting needs 1 or 3 spatial crops, got {self.crops}")
        object.__setattr__(self, "enhancement", canonical(self.enhancement))  # numbers: the original's gamma

    @property
    def num_clips(self) -> int:
        return self.views * self.crops

    def label(self) -> str:
        """``"VxC@TAG"`` (e.g. ``3x3@g0.25``, ``1x1@gnone``)."""
        return f"{self.views}x{self.crops}@{self.enhancement.tag()}"


def parse_tta_setting(text: str, default: Enhancement) -> TTASetting:
    """Parses ``"VxC"`` (enhancement ``default``) or ``"VxC@E"``, where ``E`` is an enhancement spec
    (``none``, ``gamma:value=0.45``) or the original's ``gG`` / ``gnone``; e.g. ``"1x3"``, ``"3x3@g0.45"``."""
    m = _SETTING_RE.match(str(text))
    if not m:
        raise ValueError(
            f"TEST.EXTRA_SETTINGS entry {text!r} is not of the form 'VxC' or 'VxC@ENHANCEMENT' (e.g. '1x3', "
            "'3x3@gamma:value=0.45', '1x1@none')"
        )
    views, crops, suffix = int(m.group(1)), int(m.group(2)), m.group(3)
    try:
        enhancement = default if suffix is None else setting_enhancement(suffix)
        return TTASetting(views, crops, enhancement)
    except ValueError as exc:
        raise ValueError(f"TEST.EXTRA_SETTINGS entry {text!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------------- subsets
def _probe_lengths(max_length: int) -> list[int]:
    short = list(range(1, 130))
    return short + list(range(130, max_length + 1, 7)) + [max_length]


def temporal_view_map(
    decoded_views: int,
    views: int,
    view_indices: ViewIndexFn,
    max_length: int = 3000,
) -> list[int] | None:
    """For each of ``views`` temporal views, the decoded view (of ``decoded_views``) sampling exactly the same
    frames for every video length 1..``max_length`` (a dense probe); None when some view has no twin.

    The check is empirical, on the sampler itself, so it follows whatever rounding the sampler does.
    """
    if views == decoded_views:
        return list(range(views))
    quick = [1, 2, 7, 33, 64, 100, 101, 257, 300, 999]
    full = _probe_lengths(max_length)
    mapping = []
    for t in range(views):
        twin = None
        for u in range(decoded_views):
            if all(
                list(view_indices(n, views, t)) == list(view_indices(n, decoded_views, u)) for n in quick
            ) and all(
                list(view_indices(n, views, t)) == list(view_indices(n, decoded_views, u)) for n in full
            ):
                twin = u
                break
        if twin is None:
            return None
        mapping.append(twin)
    return mapping


def spatial_crop_map(decoded_crops: int, crops: int) -> list[int] | None:
    """For each of ``crops`` crops, the index of the same crop among ``decoded_crops`` (None: not contained)."""
    if crops == decoded_crops:
        return list(range(crops))
    if crops == 1 and decoded_crops == 3:
        return [CENTRE_CROP]
    return None


def subset_clip_indices(
    decoded_views: int, decoded_crops: int, wanted: TTASetting, view_indices: ViewIndexFn
) -> list[int] | None:
    """Positions, among the view-major crop-minor clips of a decoded ``decoded_views x decoded_crops`` setting,
    of ``wanted``'s clips in ``wanted``'s own order; None when its views or crops are not all contained.
    (The enhancement plays no part: it is a transform of the same decoded frames.)"""
    crop_map = spatial_crop_map(decoded_crops, wanted.crops)
    if crop_map is None:
        return None
    view_map = temporal_view_map(decoded_views, wanted.views, view_indices)
    if view_map is None:
        return None
    return [u * decoded_crops + s for u in view_map for s in crop_map]


@dataclass
class DecodePass:
    """One pass over the split: every video decoded once for ``views x crops`` clips, made with every
    enhancement of ``enhancements``; the clip axis is enhancement-major (``slot * views * crops + clip``).

    ``outputs`` pairs each setting served by the pass with its columns on that clip axis.
    """

    views: int
    crops: int
    enhancements: list[Enhancement] = field(default_factory=list)
    outputs: list[tuple[TTASetting, list[int]]] = field(default_factory=list)

    def slot(self, enhancement: Enhancement) -> int:
        """Index of ``enhancement`` in ``enhancements`` (appended when new)."""
        if enhancement not in self.enhancements:
            self.enhancements.append(enhancement)
        return self.enhancements.index(enhancement)

    @property
    def clips_per_video(self) -> int:
        return len(self.enhancements) * self.views * self.crops

    def needed_columns(self) -> list[int]:
        """The clip columns some output uses (only these are forwarded), ascending."""
        return sorted({c for _, cols in self.outputs for c in cols})

    def label(self) -> str:
        return f"{self.views}x{self.crops}@{'/'.join(e.tag() for e in self.enhancements)}"


def plan_passes(settings: Iterable[TTASetting], view_indices: ViewIndexFn) -> list[DecodePass]:
    """Groups settings into as few decoding passes as the subset rule allows.

    Settings are visited largest first (ties keep their order); each joins the first pass whose decoded
    views x crops contain it (adding its enhancement to that pass when new), else it starts a pass of its own.
    Duplicates are dropped.
    """
    passes: list[DecodePass] = []
    for setting in sorted(dict.fromkeys(settings), key=lambda s: -s.num_clips):
        for p in passes:
            idx = subset_clip_indices(p.views, p.crops, setting, view_indices)
            if idx is not None:
                base = p.slot(setting.enhancement) * p.views * p.crops
                p.outputs.append((setting, [base + i for i in idx]))
                break
        else:
            passes.append(
                DecodePass(
                    setting.views,
                    setting.crops,
                    [setting.enhancement],
                    [(setting, list(range(setting.num_clips)))],
                )
            )
    return passes


# ---------------------------------------------------------------------------------------------------- aggregation
def aggregate_clips(clip_outputs: torch.Tensor, method: str = "sum") -> torch.Tensor:
    """Per-video scores from ``(N, K, C)`` clip outputs (K clips per video, in clip order).

    As the original's test meter: the result starts at zeros and each clip is folded in, in order —
    ``sum`` adds the raw outputs (no division), ``max`` keeps the element-wise maximum (so it never drops
    below 0), ``mean`` is the sum divided by K.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"DATA.ENSEMBLE_METHOD = {method!r} is not one of {', '.join(AGGREGATIONS)}")
    if clip_outputs.dim() != 3:
        raise ValueError(
            f"clip outputs must be (videos, clips, classes), got shape {tuple(clip_outputs.shape)}"
        )
    x = clip_outputs.float()
    acc = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float32)
    for k in range(x.shape[1]):
        acc = acc + x[:, k] if method != "max" else torch.maximum(acc, x[:, k])
    if method == "mean":
        acc = acc / x.shape[1]
    return acc
