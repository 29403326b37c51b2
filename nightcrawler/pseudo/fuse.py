"""Weighted fusion of several models' class probabilities, with class-conditional weights as data.

The original (spec §9.1, §10.2) softmaxes every PKL in float32, then per video picks a weight set: a special set
when one model's argmax falls in given classes (e.g. the SSV2 UniFormer votes Sit/Stand), the default set
otherwise. Each product weight * probability is float32 and the terms are added left to right in float32; the
result is kept as float64. Optionally rows whose fused argmax falls in given classes are replaced by one model's
probabilities (the vote's Run/Walk -> SlowFast override). Nothing is renormalised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from nightcrawler.pseudo.io import PseudoLabelError

_DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class WeightRule:
    """Use ``weights`` for rows where model ``model``'s argmax is one of ``classes``."""

    model: str
    classes: tuple[int, ...]
    weights: dict[str, float]


@dataclass(frozen=True)
class Replacement:
    """Rows whose blended argmax is one of ``classes`` take model ``model``'s probabilities instead."""

    classes: tuple[int, ...]
    model: str


@dataclass(frozen=True)
class FusionSpec:
    """How to fuse: default weights (summation order = mapping order), conditional rules (first match wins)."""

    weights: dict[str, float]
    rules: tuple[WeightRule, ...] = ()
    replacements: tuple[Replacement, ...] = ()
    precision: str = "float32"  # arithmetic of the weighted sum: "float32" (original) or "float64"
    input_transform: str = "softmax"  # applied to each PKL's scores: "softmax" (original) or "none"
    normalise: bool = False  # divide each fused row by its sum (the original never does)

    def __post_init__(self) -> None:
        if self.precision not in _DTYPES:
            raise PseudoLabelError(
                f"fusion precision must be one of {sorted(_DTYPES)}, got {self.precision!r}"
            )
        if self.input_transform not in ("softmax", "none"):
            raise PseudoLabelError(
                f"fusion input_transform must be 'softmax' or 'none', got {self.input_transform!r}"
            )
        if not self.weights:
            raise PseudoLabelError("fusion needs at least one default weight")

    @property
    def models(self) -> tuple[str, ...]:
        """Every model role the fusion reads, in first-use order."""
        roles: list[str] = []
        for name in [
            *self.weights,
            *(r.model for r in self.rules),
            *(w for r in self.rules for w in r.weights),
        ]:
            if name not in roles:
                roles.append(name)
        for rep in self.replacements:
            if rep.model not in roles:
                roles.append(rep.model)
        return tuple(roles)


@dataclass
class FusionResult:
    """Fused scores per video plus what decided them."""

    blend: np.ndarray  # (N, C) float64, the weighted sum before any replacement
    fused: np.ndarray  # (N, C) float64, after replacements (and optional normalisation)
    branch: np.ndarray  # (N,) int: index of the WeightRule used, -1 for the default weights
    replaced_by: np.ndarray  # (N,) int: index of the Replacement applied, -1 for none
    # role -> the probabilities each model contributed (after the input transform)
    inputs: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """Argmax of the fused scores (first index on ties)."""
        return np.argmax(self.fused, axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Max of the fused scores."""
        return np.max(self.fused, axis=1)


def softmax(scores: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Row-wise softmax computed in float64 and returned as ``dtype``."""
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(dtype)


def weighted_sum(probs: Mapping[str, np.ndarray], weights: Mapping[str, float], dtype: type) -> np.ndarray:
    """sum_k w_k * P_k with each product and each partial sum in ``dtype``, added in the mapping's order."""
    total = None
    for role, weight in weights.items():
        term = probs[role].astype(dtype, copy=False) * dtype(weight)
        total = term if total is None else total + term
    return total


def fuse_predictions(scores: Mapping[str, np.ndarray], spec: FusionSpec) -> FusionResult:
    """Fuses per-model scores (role -> (N, C) PKL rows) following ``spec``."""
    missing = [role for role in spec.models if role not in scores]
    if missing:
        raise PseudoLabelError(f"fusion needs model(s) {missing} but only {sorted(scores)} were given")
    shapes = {role: np.shape(scores[role]) for role in spec.models}
    if len(set(shapes.values())) != 1:
        raise PseudoLabelError(f"model outputs differ in shape: {shapes}")
    dtype = _DTYPES[spec.precision]
    if spec.input_transform == "softmax":
        probs = {role: softmax(scores[role], dtype) for role in spec.models}
    else:
        probs = {role: np.asarray(scores[role]).astype(dtype) for role in spec.models}
    n, num_classes = shapes[spec.models[0]]
    blend = weighted_sum(probs, spec.weights, dtype).astype(np.float64)
    branch = np.full(n, -1, dtype=np.int64)
    for i, rule in enumerate(spec.rules):
        _check_classes(rule.classes, num_classes, f"fusion rule {i}")
        hit = (branch < 0) & np.isin(np.argmax(probs[rule.model], axis=1), rule.classes)
        if hit.any():
            blend[hit] = weighted_sum({r: p[hit] for r, p in probs.items()}, rule.weights, dtype)
        branch[hit] = i
    fused = blend.copy()
    replaced_by = np.full(n, -1, dtype=np.int64)
    blend_label = np.argmax(blend, axis=1)
    for i, rep in enumerate(spec.replacements):
        _check_classes(rep.classes, num_classes, f"fusion replacement {i}")
        hit = (replaced_by < 0) & np.isin(blend_label, rep.classes)
        fused[hit] = probs[rep.model][hit]
        replaced_by[hit] = i
    if spec.normalise:
        fused = fused / fused.sum(axis=1, keepdims=True)
    return FusionResult(blend, fused, branch, replaced_by, probs)


def _check_classes(classes: tuple[int, ...], num_classes: int, where: str) -> None:
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise PseudoLabelError(f"{where}: class ids {bad} outside 0..{num_classes - 1}")
