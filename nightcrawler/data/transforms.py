"""Clip transforms: enhancement + normalisation look-up, test-time resize/crops, training augmentation (spec §3, §4).

Frames arrive as uint8 ``(T, H, W, 3)`` RGB. A pointwise enhancement (gamma correction) and normalisation are one
256-entry look-up (``normalize_lut``) applied to the whole clip; other enhancements run on the frames first. Clips leave as float32 ``(3, T, crop, crop)``.

Test path (:func:`test_views`): look-up written straight into ``(3, T, H, W)`` planes, short-side resize to
the crop size (long side floored, bilinear, ``align_corners=False``, no antialias), then the original's
crops: one crop -> centre; landscape and square frames -> left / centre / right, portrait -> top / centre /
bottom; the other axis centred with ``ceil``.

Training path (:class:`TrainTransform`): timm RandAugment with the same ops and magnitudes on every frame,
Inception-style random resized crop, horizontal flip, timm random erasing with one box through all frames.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import str_to_pil_interp

from nightcrawler.data.enhance import Enhancement, Identity, build_enhancement, check_frames
from nightcrawler.data.enhance import gamma_lut as gamma_lut  # re-exported: the original's table

DEFAULT_MEAN = (0.45, 0.45, 0.45)
DEFAULT_STD = (0.225, 0.225, 0.225)


# --------------------------------------------------------------------------------------------- look-ups

EnhancementLike = Enhancement | str | float | None  # a float is the original's gamma


as_enhancement = build_enhancement  # an enhancement, a spec, the original's gamma value, or None


@functools.lru_cache(maxsize=32)
def _normalize_lut(table: bytes, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    x = torch.frombuffer(bytearray(table), dtype=torch.uint8).float().view(256, 1) / 255.0
    # the same float32 steps as the original's per-pixel normalisation
    return (
        (x - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)
    ).contiguous()


def _channels(values: Sequence[float], name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"{name} needs 1 or 3 values (RGB), got {values}")
    if name == "std" and min(values) <= 0:
        raise ValueError(f"std values must be > 0, got {values}")
    return values


def normalize_lut(
    table: torch.Tensor | None, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD
) -> torch.Tensor:
    """float32 ``(256, 3)`` table: normalised network input of raw value ``v`` per RGB channel after the uint8
    ``(256,)`` look-up ``table`` (None: identity): ``(table[v] / 255 - mean) / std`` in float32."""
    if table is None:
        table = Identity().lut()
    if table.dtype != torch.uint8 or tuple(table.shape) != (256,):
        raise ValueError(
            f"a pointwise enhancement's table must be uint8 (256,), got {table.dtype} {tuple(table.shape)}"
        )
    return _normalize_lut(table.numpy().tobytes(), _channels(mean, "mean"), _channels(std, "std"))


def gamma_normalize_lut(
    gamma: EnhancementLike, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD
) -> torch.Tensor:
    """:func:`normalize_lut` after a pointwise enhancement (the original's gamma when a float)."""
    table = as_enhancement(gamma).lut()
    if table is None:
        raise ValueError(f"{as_enhancement(gamma).spec} is not pointwise: it has no look-up table")
    return normalize_lut(table, mean, std)


def lookup(frames: torch.Tensor, lut: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
    """Applies a ``(256,)`` or per-channel ``(256, 3)`` table to uint8 ``(T, H, W, 3)`` frames (one gather).

    Returns ``(T, H, W, 3)``, or with ``channels_first`` a contiguous ``(3, T, H, W)`` (written directly in
    that layout: the resize and crops after it run fastest on planes).
    """
    check_frames(frames)
    table = lut.numpy()
    if table.ndim == 2 and (table == table[:, :1]).all():
        table = table[:, 0]
    src = frames.numpy()
    if table.ndim == 1:  # fancy indexing with contiguous uint8 indices: numpy's fastest gather here
        return torch.from_numpy(
            table[np.ascontiguousarray(src.transpose(3, 0, 1, 2)) if channels_first else src]
        )
    if not channels_first:
        return torch.from_numpy(table[src, np.arange(3)])
    return torch.from_numpy(np.stack([table[:, c][src[..., c]] for c in range(3)]))


def apply_gamma(frames: torch.Tensor, gamma: EnhancementLike) -> torch.Tensor:
    """Enhanced copy of uint8 ``(T, H, W, 3)`` frames (an identity returns the frames themselves)."""
    check_frames(frames)
    enhancement = as_enhancement(gamma)
    return frames if enhancement.is_identity else enhancement(frames)


def normalize(
    frames: torch.Tensor,
    gamma: EnhancementLike = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    channels_first: bool = False,
) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float32 ``(T, H, W, 3)`` (or ``(3, T, H, W)``): enhance, /255, - mean, / std.

    A pointwise enhancement is fused into the normalisation look-up; another one runs on the frames first.
    """
    enhancement = as_enhancement(gamma)
    table = enhancement.lut()
    if table is None:
        frames, table = enhancement(frames), None
    return lookup(frames, normalize_lut(table, mean, std), channels_first)


# --------------------------------------------------------------------------------------------- test path


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Size after scaling the short side to ``size``, long side floored (squares scale by height)."""
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Scales a float ``(N, C, H, W)`` tensor (e.g. a ``(3, T, H, W)`` clip) so its short side is ``size``.

    Bilinear, ``align_corners=False``, no antialias; returns the input itself when no resize is needed.
    """
    height, width = clip.shape[-2:]
    new_size = short_side_size(height, width, size)
    if new_size == (height, width):
        return clip
    return F.interpolate(clip, size=new_size, mode="bilinear", align_corners=False, antialias=False)


def crop_boxes(height: int, width: int, crop_size: int, num_crops: int) -> list[tuple[int, int, int, int]]:
    """``(y, x, crop_size, crop_size)`` boxes of the test crops in a ``height`` x ``width`` image.

    ``num_crops == 1``: the centre crop (the original's crop index 1). Otherwise indices ``0..num_crops-1``:
    landscape or square -> x = 0, ceil((W-c)/2), W-c; portrait -> y = 0, ceil((H-c)/2), H-c; the other axis
    at ceil((side-c)/2).
    """
    if not 1 <= num_crops <= 3:
        raise ValueError(f"num_crops must be 1, 2 or 3, got {num_crops}")
    if crop_size > min(height, width):
        raise ValueError(f"crop size {crop_size} exceeds the image size {height}x{width}")
    centre_y, centre_x = math.ceil((height - crop_size) / 2), math.ceil((width - crop_size) / 2)
    boxes = []
    for index in [1] if num_crops == 1 else range(num_crops):
        y, x = centre_y, centre_x
        if height > width:
            y = {0: 0, 1: centre_y, 2: height - crop_size}[index]
        else:
            x = {0: 0, 1: centre_x, 2: width - crop_size}[index]
        boxes.append((y, x, crop_size, crop_size))
    return boxes


def spatial_crops(
    clip: torch.Tensor, crop_size: int, num_crops: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Crops a ``(C, T, H, W)`` clip into ``(num_crops, C, T, crop, crop)``, a new tensor or ``out``."""
    height, width = clip.shape[-2:]
    boxes = crop_boxes(height, width, crop_size, num_crops)
    return torch.stack([clip[:, :, y : y + h, x : x + w] for y, x, h, w in boxes], out=out)


def test_views(
    frames: torch.Tensor,
    crop_size: int,
    num_crops: int,
    gamma: EnhancementLike = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Test clips of one temporal view: uint8 ``(T, H, W, 3)`` -> float32 ``(num_crops, 3, T, crop, crop)``.

    ``gamma``: the enhancement (an :class:`~nightcrawler.data.enhance.Enhancement`, a spec, or the original's
    gamma value). ``out`` (e.g. a slice of a video's ``(V*C, 3, T, crop, crop)`` batch) receives the clips
    without an extra copy.
    """
    clip = normalize(frames, gamma, mean, std, channels_first=True)  # (3, T, H, W)
    return spatial_crops(resize_short_side(clip, crop_size), crop_size, num_crops, out=out)


test_views.__test__ = False  # not a pytest test, despite the name


# --------------------------------------------------------------------------------------------- training path


def random_resized_crop_box(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    rng: random.Random | None = None,
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """Inception-style crop ``(y, x, h, w)``: area fraction ~ U(scale), aspect log-uniform in ``ratio``.

    Accepts ``0 < w <= W`` and ``0 < h <= H`` (sides rounded) and a uniform top-left; after ``attempts``
    failures, a centred crop whose aspect is clamped to ``ratio``.
    """
    rng = random if rng is None else rng
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    if width / height < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif width / height > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ClipRandAugment:
    """timm RandAugment applied with identical ops, magnitudes and signs to every frame of a clip.

    timm draws its choices from Python's ``random`` and NumPy's global generator, per call. Each clip gets
    one seed; both generators are reset to it before every frame (and restored afterwards), so every frame
    replays the same draws. Content-dependent ops (autocontrast, equalize) still see their own frame.
    """

    def __init__(self, config: str = "rand-m7-n4-mstd0.5-inc1", interpolation: str = "bicubic"):
        self.config = config
        self.transform = rand_augment_transform(config, {"interpolation": str_to_pil_interp(interpolation)})

    def __call__(self, frames: torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
        check_frames(frames)
        seed = (random if rng is None else rng).getrandbits(32)
        py_state, np_state = random.getstate(), np.random.get_state()
        out = np.empty(tuple(frames.shape), dtype=np.uint8)
        try:
            for t, frame in enumerate(frames.numpy()):
                random.seed(seed)
                np.random.seed(seed)
                out[t] = np.asarray(self.transform(Image.fromarray(frame)))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return torch.from_numpy(out)


class TrainTransform:
    """One augmented training clip: uint8 ``(T, H, W, 3)`` -> float32 ``(3, T, crop, crop)`` (spec §3.1).

    Order: enhancement (optional; the original trains without), RandAugment (clip-consistent), normalise, random
    resized crop to ``crop_size`` (bilinear; or, with ``scale=None``, short-side jitter in ``jitter_scales``
    then a random ``crop_size`` crop), horizontal flip, random erasing (timm, one box through all frames,
    i.i.d. N(0, 1) fill in ``pixel`` mode). Crop/flip/RandAugment-seed draws come from ``rng`` (default: the
    ``random`` module); timm's erasing draws from ``random`` and torch's global generator.
    """

    def __init__(
        self,
        crop_size: int = 224,
        rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1",
        interpolation: str = "bicubic",
        scale: Sequence[float] | None = (0.08, 1.0),
        ratio: Sequence[float] = (0.75, 1.3333),
        flip_prob: float = 0.5,
        re_prob: float = 0.25,
        re_mode: str = "pixel",
        re_count: int = 1,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        jitter_scales: Sequence[int] | None = None,
        enhancement: EnhancementLike = None,
    ):
        if not scale and not jitter_scales:
            raise ValueError("TrainTransform needs scale/ratio (random resized crop) or jitter_scales")
        if scale and not (0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"invalid random-resized-crop ranges scale={scale} ratio={ratio}")
        if not scale and min(jitter_scales) < crop_size:
            raise ValueError(f"jitter_scales {jitter_scales} must not be below crop_size {crop_size}")
        self.crop_size = crop_size
        self.rand_augment = ClipRandAugment(rand_augment, interpolation) if rand_augment else None
        self.scale = tuple(scale) if scale else None
        self.ratio = tuple(ratio)
        self.jitter_scales = tuple(jitter_scales) if jitter_scales else None
        self.flip_prob = flip_prob
        self.eraser = (
            RandomErasing(re_prob, mode=re_mode, max_count=re_count, device="cpu") if re_prob > 0 else None
        )
        self.lut = normalize_lut(None, mean, std)
        self.enhancement = as_enhancement(enhancement)

    def __call__(self, frames: torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
        rng = random if rng is None else rng
        frames = apply_gamma(frames, self.enhancement)
        if self.rand_augment is not None:
            frames = self.rand_augment(frames, rng)
        num, height, width, _ = frames.shape
        size = self.crop_size
        if self.scale:
            y, x, h, w = random_resized_crop_box(height, width, self.scale, self.ratio, rng)
            clip = lookup(frames[:, y : y + h, x : x + w], self.lut, channels_first=True)
            clip = F.interpolate(
                clip, size=(size, size), mode="bilinear", align_corners=False, antialias=False
            )
        else:
            short = int(round(rng.uniform(*self.jitter_scales)))
            clip = resize_short_side(lookup(frames, self.lut, channels_first=True), short)
            y, x = rng.randint(0, clip.shape[-2] - size), rng.randint(0, clip.shape[-1] - size)
            clip = clip[:, :, y : y + size, x : x + size]
        if rng.random() < self.flip_prob:
            clip = clip.flip(-1)
        out = clip.contiguous()  # (3, T, size, size)
        if self.eraser is not None:
            self.eraser(out.view(3 * num, size, size))  # one box through every frame and channel
        return out


def slowfast_pathways(clip: torch.Tensor, alpha: int) -> list[torch.Tensor]:
    """PySlowFast's two-pathway packing of a ``(C, T, H, W)`` clip: ``[slow, fast]``.

    slow = ``T // alpha`` frames at ``int(linspace(0, T-1, T // alpha))``; fast = the clip itself.
    """
    if alpha < 1 or clip.shape[1] // alpha < 1:
        raise ValueError(f"alpha must be in [1, T={clip.shape[1]}], got {alpha}")
    index = torch.linspace(0, clip.shape[1] - 1, clip.shape[1] // alpha).long()
    return [clip.index_select(1, index), clip]
