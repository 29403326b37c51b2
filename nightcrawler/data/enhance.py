"""Low-light enhancement of decoded frames, as registered classes named by spec strings.

An enhancement is a class in :data:`ENHANCEMENT_REGISTRY`, built from a spec ``NAME`` or
``NAME:key=value,key=value`` (``none``, ``gamma:value=0.25``) and called on uint8 frames ``(T, H, W, 3)``; it
returns uint8 frames of the same shape. A pointwise enhancement also offers :meth:`Enhancement.lut`, a 256-entry
table that the test path fuses into the normalisation look-up (one gather per clip, as fast as no enhancement).

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
import inspect
import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

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
