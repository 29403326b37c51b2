"""Low-light enhancement of decoded frames, as registered classes named by spec strings.

An enhancement is a class in :data:`ENHANCEMENT_REGISTRY`, built from a spec ``NAME`` or
``NAME:key=value,key=value`` (``none``, ``gamma:value=0.25``) and called on uint8 frames ``(T, H, W, 3)``; it
returns uint8 frames of the same shape. A pointwise enhancement also offers :meth:`Enhancement.lut`, a 256-entry
table that the test path fuses into the normalisation look-up (one gather per clip, as fast as no enhancement).

Registered here: ``none``, ``gamma`` (the original's fixed correction), ``adaptive_gamma`` (per clip, to a target
mean luma), ``clahe`` (kornia's contrast-limited adaptive histogram equalisation) and, from
:mod:`nightcrawler.data.enhance_curve`, ``learned_curve`` (a Zero-DCE-style network, ``tools/train_enhancer.py``).
A non-pointwise one is called once on the whole decoded union of a test video's views.

Where each phase's enhancement comes from (:func:`phase_enhancement`):

============ ===================== =============================================== ==========================
phase        key                   applies to                                      when the key is empty
============ ===================== =============================================== ==========================
``test``     ``ENHANCE.TEST``      every split the tester reads                    ``TEST.GAMMA`` if
                                                                                   ``TEST.USE_GAMMA``
``eval``     ``ENHANCE.EVAL``      dark evaluation splits during training (every   ``TEST.GAMMA``
                                   split with a ``*_GIC`` decoding backend)
``bn``       ``ENHANCE.BN``        the clips that re-estimate BatchNorm statistics ``BN.GAMMA``
``train``    ``ENHANCE.TRAIN_DARK`` dark training splits (unlabelled, pseudo)      ``DATA.TRAIN_GAMMA``
============ ===================== =============================================== ==========================

The right-hand column is the original's keys, kept as aliases: a gamma <= 0 or equal to 1 means none.
A user's own enhancement registers here from a module named in the config's ``IMPORTS``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torchvision.transforms.functional as TF
from fvcore.common.registry import Registry

from nightcrawler.data.splits import split_info

ENHANCEMENT_REGISTRY = Registry("ENHANCEMENT")
ENHANCEMENT_REGISTRY.__doc__ = "Frame enhancements, built from spec strings by :func:`build_enhancement`."

PHASES = ("test", "eval", "bn", "train")
PHASE_KEYS = {"test": "TEST", "eval": "EVAL", "bn": "BN", "train": "TRAIN_DARK"}
_SPEC_RE = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?::\s*(.*?))?\s*$")


def check_frames(frames: torch.Tensor) -> None:
    """Raises ValueError unless ``frames`` is a uint8 ``(T, H, W, 3)`` tensor."""
    if not (
        isinstance(frames, torch.Tensor)
        and frames.dtype == torch.uint8
        and frames.ndim == 4
        and frames.shape[-1] == 3
    ):
        desc = (
            f"{frames.dtype} {tuple(frames.shape)}"
            if isinstance(frames, torch.Tensor)
            else type(frames).__name__
        )
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {desc}")


def apply_lut(frames: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``table[frames]`` for a uint8 ``(256,)`` table and uint8 frames (one gather)."""
    return (
        table[frames.long()]
        if frames.device.type != "cpu"
        else torch.from_numpy(table.numpy()[frames.numpy()])
    )


class Enhancement:
    """Base class: subclasses take their parameters as keyword arguments and implement :meth:`__call__`
    (or, when pointwise, :meth:`lut`). ``spec_name`` is the name used in spec strings (default: the class
    name in lower case)."""

    spec_name: ClassVar[str] = ""

    @classmethod
    def name(cls) -> str:
        return cls.spec_name or cls.__name__.lower()

    def params(self) -> dict[str, Any]:
        """The constructor arguments that reproduce this enhancement (default: public attributes named
        like the constructor's parameters)."""
        names = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in names if k != "self" and hasattr(self, k)}

    @property
    def spec(self) -> str:
        """The canonical spec string (``name`` or ``name:key=value,...``)."""
        params = self.params()
        if not params:
            return self.name()
        return f"{self.name()}:" + ",".join(f"{k}={_render(v)}" for k, v in params.items())

    def tag(self) -> str:
        """A short, file-name-safe rendering of the spec (PKL suffixes, TTA labels)."""
        return re.sub(r"[^\w.+-]+", "-", self.spec.replace(":", "-").replace("=", "")).strip("-")

    @property
    def is_identity(self) -> bool:
        """True when the enhancement leaves every frame unchanged."""
        table = self.lut()
        return table is not None and bool(torch.equal(table, torch.arange(256, dtype=torch.uint8)))

    def lut(self) -> torch.Tensor | None:
        """uint8 ``(256,)`` table of a pointwise enhancement (the same for every pixel and channel); None when
        the enhancement is not pointwise."""
        return None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        table = self.lut()
        if table is None:
            raise NotImplementedError(f"{type(self).__name__} must implement __call__ or lut()")
        check_frames(frames)
        return frames if self.is_identity else apply_lut(frames, table)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Enhancement) and canonical_spec(self) == canonical_spec(other)

    def __hash__(self) -> int:
        return hash(canonical_spec(self))

    def __repr__(self) -> str:
        return f"Enhancement({self.spec})"


def _render(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    return str(value)


@ENHANCEMENT_REGISTRY.register()
class Identity(Enhancement):
    """No enhancement (spec ``none``)."""

    spec_name = "none"

    def lut(self) -> torch.Tensor:
        return torch.arange(256, dtype=torch.uint8)

    def tag(self) -> str:
        return "gnone"  # the original's PKL suffix for "no gamma"


@functools.lru_cache(maxsize=32)
def _gamma_table(value: float) -> torch.Tensor:
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 256)
    # torchvision's own uint8 adjust_gamma (gain 1), i.e. the original's correction, on every input value
    return TF.adjust_gamma(values, value, gain=1).view(256)


@ENHANCEMENT_REGISTRY.register()
class Gamma(Enhancement):
    """Gamma correction ``255 * (v / 255) ** value`` as torchvision's uint8 ``adjust_gamma`` (gain 1) computes
    it; the original brightens dark test frames with ``value=0.25``."""

    def __init__(self, value: float = 0.25):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (math.isfinite(value) and value > 0)
        ):
            raise ValueError(f"gamma must be a positive finite number, got {value!r}")
        self.value = float(value)

    def lut(self) -> torch.Tensor:
        return _gamma_table(self.value).clone()

    def tag(self) -> str:
        return f"g{self.value:g}"  # the original's PKL suffix (``_g0.45``)


def gamma_lut(gamma: float | None) -> torch.Tensor:
    """uint8 ``(256,)`` table of :class:`Gamma` ``value=gamma`` (None: identity)."""
    return Identity().lut() if gamma is None else Gamma(gamma).lut()


# ------------------------------------------------------------------------------------------ beyond fixed gamma
LUMA_601 = (0.299, 0.587, 0.114)  # Rec. 601 luma weights: UG2 / ARID are SD (BT.601) videos


def mean_luma(frames: torch.Tensor) -> float:
    """Mean Rec. 601 luma ``Y' = 0.299 R' + 0.587 G' + 0.114 B'`` of uint8 frames, in [0, 1] of full scale (on
    the gamma-encoded values, as a video's own Y plane)."""
    check_frames(frames)
    return float(_luma_of_tables(_channel_histograms(frames), Identity().lut()))


def _channel_histograms(frames: torch.Tensor) -> torch.Tensor:
    """float64 ``(3, 256)``: the fraction of the pixels of each RGB channel at each value."""
    pixels = frames.reshape(-1, 3).numpy()
    counts = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(3)])
    return torch.from_numpy(counts / max(1, len(pixels)))


def _luma_of_tables(histograms: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean Rec. 601 luma (in [0, 1]) of frames with these channel histograms after the uint8 look-up ``table``."""
    per_channel = histograms @ table.to(torch.float64) / 255.0
    return per_channel @ torch.tensor(LUMA_601, dtype=torch.float64)


@ENHANCEMENT_REGISTRY.register()
class AdaptiveGamma(Enhancement):
    """Per-clip gamma: the gamma that brings the clip's mean Rec. 601 luma (on the uint8 frames) to ``target``,
    clamped to ``[min_gamma, max_gamma]``, then applied as :class:`Gamma` (torchvision's uint8 correction).

    The gamma is solved for on the clip's three channel histograms, so the mean luma of the *corrected* frames
    meets the target (a plain ``log(target) / log(mean)`` undershoots on dark, spread-out clips: the mean of
    ``x ** g`` is below ``mean(x) ** g``). ``target=0.45`` is middle grey (18% reflectance) in gamma-encoded
    8-bit video, what a camera's auto exposure aims for, and about what the original's fixed gamma 0.25 gives
    an average ARID clip (mean luma about 0.08 of full scale). ``max_gamma=1`` never darkens a clip already
    brighter than the target; ``min_gamma=0.1`` bounds the noise amplification of near-black clips.

    Pointwise, but its table depends on the clip, so :meth:`lut` is None: every caller gives it a whole clip,
    and the test path decodes the union of a video's temporal views once and calls it once on that union (one
    gamma per video, the same for every view and crop); training and BN-adaptation items get one gamma per clip.
    Cost: one histogram pass and a 256-entry bisection on top of the gamma look-up: about 16 ms per 32x224x224
    clip on a 2-core CPU, twice a fixed gamma's look-up (which the test path fuses into normalisation).
    """

    spec_name = "adaptive_gamma"
    _STEPS = 30  # bisection steps on log(gamma): far below one 8-bit level

    def __init__(self, target: float = 0.45, min_gamma: float = 0.1, max_gamma: float = 1.0):
        for name, value in (("target", target), ("min_gamma", min_gamma), ("max_gamma", max_gamma)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0 < target < 1:
            raise ValueError(f"target must be a mean luma in (0, 1) of full scale, got {target}")
        if not 0 < min_gamma <= max_gamma:
            raise ValueError(f"need 0 < min_gamma <= max_gamma, got {min_gamma} and {max_gamma}")
        self.target = float(target)
        self.min_gamma = float(min_gamma)
        self.max_gamma = float(max_gamma)

    def gamma_for(self, frames: torch.Tensor) -> float:
        """The gamma this enhancement applies to ``frames`` (one value for the whole clip)."""
        check_frames(frames)
        histograms = _channel_histograms(frames)

        def luma_after(gamma: float) -> float:  # decreasing in gamma
            return float(_luma_of_tables(histograms, _gamma_table.__wrapped__(gamma)))

        if frames.numel() == 0 or luma_after(self.max_gamma) >= self.target:
            return self.max_gamma
        if luma_after(self.min_gamma) <= self.target:
            return self.min_gamma
        # bisection on log(gamma), keeping luma_after(exp(lo)) > target >= luma_after(exp(hi))
        lo, hi = math.log(self.min_gamma), math.log(self.max_gamma)
        for _ in range(self._STEPS):
            mid = 0.5 * (lo + hi)
            if luma_after(math.exp(mid)) > self.target:
                lo = mid
            else:
                hi = mid
        return math.exp(hi)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return Gamma(self.gamma_for(frames))(frames)


@ENHANCEMENT_REGISTRY.register()
class Clahe(Enhancement):
    """Contrast-limited adaptive histogram equalisation (kornia's ``equalize_clahe``) of each frame.

    ``channel``: ``value`` (default) equalises the HSV value ``V = max(R, G, B)`` and scales R, G, B by
    ``V' / V``, i.e. kornia's ``rgb_to_hsv`` -> equalise V -> ``hsv_to_rgb`` without the hue arithmetic: hue
    and saturation are kept exactly, so a dark clip's colours survive; ``luma`` equalises the Y of YCbCr
    (kornia's conversions) and keeps Cb/Cr, which desaturates brightened regions; ``rgb`` equalises each
    channel alone, which shifts colours (it removes a colour cast and invents others).

    ``clip_limit=4`` instead of kornia's (and OpenCV's) 40: at 40 every 8x8 tile is equalised almost fully,
    which on noise-dominated dark video stretches sensor noise and H.264 blocks to full-range texture; 2-4 is
    the usual range, and 4 roughly doubles a dark synthetic clip's contrast with moderate noise. ``grid=8``
    (kornia's default): 8x8 tiles, 40x30 pixels on ARID's 320x240 frames (the test path enhances decoded
    frames, before resizing and cropping), 28x28 on a 224 crop. Frames go to float [0, 1] and back to
    uint8 (rounded), batched over T; deterministic; not pointwise (:meth:`lut` is None). Cost per 32x224x224
    clip on one CPU thread (kornia's tile interpolation): about 0.1 s (``value``), 0.2 s (``luma``), 0.45 s
    (``rgb``), ten times a look-up. Needs the ``kornia`` package.
    """

    spec_name = "clahe"
    CHANNELS = ("value", "luma", "rgb")

    def __init__(self, clip_limit: float = 4.0, grid: int = 8, channel: str = "value"):
        if isinstance(clip_limit, bool) or not isinstance(clip_limit, int | float) or not clip_limit >= 0:
            raise ValueError(f"clip_limit must be a number >= 0 (0: no limit), got {clip_limit!r}")
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a whole number of tiles >= 1, got {grid!r}")
        if channel not in self.CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(self.CHANNELS)}, got {channel!r}")
        if importlib.util.find_spec("kornia") is None:
            raise ValueError("clahe needs the kornia package (pip install 'kornia>=0.9')")
        self.clip_limit = float(clip_limit)
        self.grid = int(grid)
        self.channel = channel

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        check_frames(frames)
        if frames.numel() == 0:
            return frames
        from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb
        from kornia.enhance import equalize_clahe

        def equalize(x: torch.Tensor) -> torch.Tensor:
            return equalize_clahe(x, self.clip_limit, (self.grid, self.grid))

        x = frames.permute(0, 3, 1, 2).float().div_(255.0)  # (T, 3, H, W)
        if self.channel == "value":
            value = x.amax(dim=1, keepdim=True)
            out = x.mul_(equalize(value).div_(value.clamp_min(0.5 / 255.0)))
        elif self.channel == "luma":
            ycbcr = rgb_to_ycbcr(x)
            out = ycbcr_to_rgb(torch.cat([equalize(ycbcr[:, :1]), ycbcr[:, 1:]], dim=1))
        else:
            out = equalize(x)
        out = out.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous()


# ---------------------------------------------------------------------------------------------------- specs
def registered_enhancements() -> dict[str, type[Enhancement]]:
    """Spec name -> class of every registered enhancement."""
    return {cls.name(): cls for _, cls in ENHANCEMENT_REGISTRY}


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> ``(name, {key: value})``; values are Python literals or strings."""
    m = _SPEC_RE.match(str(text))
    if not m:
        raise ValueError(f"enhancement spec {text!r} is not of the form NAME or NAME:key=value,key=value")
    name, rest = m.group(1).lower(), m.group(2)
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in (rest or "").split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"enhancement spec {text!r}: {item!r} is not key=value")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        kwargs[key.strip()] = value
    return name, kwargs


def build_enhancement(spec: str | Enhancement | float | None) -> Enhancement:
    """The enhancement a spec names (an :class:`Enhancement` passes through; None and ``""`` mean none; a
    number is the original's gamma value, :class:`Gamma`).

    Raises ValueError naming the registered enhancements, or the accepted parameters of the chosen one.
    """
    if isinstance(spec, Enhancement):
        return spec
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return Identity()
    if isinstance(spec, bool) or not isinstance(spec, str | int | float):
        raise ValueError(f"expected an enhancement, a spec string, a gamma value or None, got {spec!r}")
    if isinstance(spec, int | float):
        return Gamma(spec)
    name, kwargs = parse_spec(spec)
    known = registered_enhancements()
    if name not in known:
        raise ValueError(
            f"unknown enhancement {name!r} in spec {spec!r}; registered: {', '.join(sorted(known))} "
            "(a module listed in IMPORTS can register more)"
        )
    cls = known[name]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")]
        raise ValueError(
            f"enhancement spec {spec!r}: {name} accepts {', '.join(accepted) or 'no parameters'}, got "
            f"{', '.join(kwargs)}"
        ) from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"enhancement spec {spec!r}: {exc}") from None


def canonical_spec(enhancement: str | Enhancement | None) -> str:
    """The canonical spec of an enhancement (``none`` for every identity, e.g. ``gamma:value=1``)."""
    e = build_enhancement(enhancement)
    return "none" if e.is_identity else e.spec


def canonical(enhancement: str | Enhancement | None) -> Enhancement:
    """:func:`build_enhancement`, with every identity turned into :class:`Identity`."""
    e = build_enhancement(enhancement)
    return Identity() if e.is_identity else e


def gamma_spec(gamma: float | None) -> str:
    """The spec of the original's gamma keys: ``none`` for None, values <= 0 and 1.0, else ``gamma:value=G``."""
    if gamma is None or float(gamma) <= 0 or float(gamma) == 1.0:
        return "none"
    return Gamma(float(gamma)).spec


# ---------------------------------------------------------------------------------------------------- phases
def _phase_key(cfg, phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"unknown enhancement phase {phase!r}; expected one of {', '.join(PHASES)}")
    return str(cfg.ENHANCE[PHASE_KEYS[phase]]).strip()


def _alias_spec(cfg, phase: str) -> str:
    """The spec the original's keys give a phase."""
    if phase == "test":
        return gamma_spec(cfg.TEST.GAMMA) if cfg.TEST.USE_GAMMA else "none"
    if phase == "eval":
        return gamma_spec(cfg.TEST.GAMMA)
    if phase == "bn":
        return gamma_spec(cfg.BN.GAMMA)
    return gamma_spec(cfg.DATA.TRAIN_GAMMA)


def phase_enhancement(cfg, phase: str, split: str | None = None) -> Enhancement:
    """The enhancement of ``phase`` (see the module docstring); ``split`` restricts phases ``eval`` and ``train``
    to the splits they apply to (others get none)."""
    from nightcrawler.data.decoders import parse_backend

    spec = _phase_key(cfg, phase) or _alias_spec(cfg, phase)
    if split is not None:
        dark = split_info(split).dark
        if phase == "eval" and not dark and not parse_backend(cfg.DATA.DECODING_BACKEND)[1]:
            spec = "none"
        if phase == "train" and not dark:
            spec = "none"
    return canonical(spec)


def split_enhancement(cfg, split: str, training: bool) -> Enhancement:
    """The enhancement a split gets when the caller does not choose: phase ``train`` for training splits,
    phase ``eval`` for test splits."""
    return phase_enhancement(cfg, "train" if training else "eval", split)


def check_enhancement_keys(cfg) -> None:
    """Builds every phase's enhancement once so that a bad spec fails at load time, naming its key."""
    for phase in PHASES:
        try:
            phase_enhancement(cfg, phase)
        except ValueError as exc:
            raise ValueError(f"ENHANCE.{PHASE_KEYS[phase]}: {exc}") from None


_GAMMA_SUFFIX_RE = re.compile(r"^g\s*([0-9.eE+-]+|none)$", re.IGNORECASE)


def setting_enhancement(text: str) -> Enhancement:
    """The enhancement after ``@`` in a TTA setting: a spec, or the original's ``gG`` / ``gnone`` (alias)."""
    m = _GAMMA_SUFFIX_RE.match(str(text).strip())
    if m is None:
        return canonical(text)
    value = m.group(1)
    if value.lower() == "none":
        return Identity()
    try:
        gamma = float(value)
    except ValueError:
        raise ValueError(f"gamma {value!r} is not a number") from None
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive number, got {value}")
    return canonical(gamma_spec(gamma))


def enhancement_list(specs: Sequence[str | Enhancement | None]) -> list[Enhancement]:
    """Canonical enhancements of ``specs``, duplicates dropped, order kept."""
    return list(dict.fromkeys(canonical(s) for s in specs))


# registers learned_curve (its module needs the names above; it imports the network lazily)
from nightcrawler.data import enhance_curve as enhance_curve  # noqa: E402
