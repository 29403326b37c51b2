"""Which fused rows become pseudo labels: per-class thresholds, keep-all, the mean - k*std rule, or a rule
registered in :data:`SELECTION_REGISTRY`.

A registered rule is a function ``rule(labels, confidence, num_classes, **params) -> limits``: the float64
threshold each row's confidence must reach (``>=``); ``params`` are the other keys of the stage config's
``selection`` block. A user's rule registers from a module listed in the stage config's ``imports``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fvcore.common.registry import Registry

from nightcrawler.pseudo.io import PseudoLabelError

METHODS = ("thresholds", "all", "mean_minus_k_std")
SELECTION_REGISTRY = Registry("SELECTION")
SELECTION_REGISTRY.__doc__ = "Pseudo-label selection rules ``f(labels, confidence, num_classes, **params)``."


def selection_methods() -> list[str]:
    """Built-in and registered selection methods."""
    return [*METHODS, *sorted(name for name, _ in SELECTION_REGISTRY)]


@dataclass(frozen=True)
class SelectionSpec:
    """Selection rule.

    - ``thresholds``: keep a row when its confidence >= ``thresholds[label]`` (original stages 1-3);
    - ``all``: keep every row (original stage 4);
    - ``mean_minus_k_std``: keep a row when its confidence > mean - k * std of the confidences (over all rows,
      or per predicted class with ``per_class``); ``ddof=1`` is torch's default ``std`` as in the original's
      (unused) training-time rule.
    """

    method: str = "thresholds"
    thresholds: tuple[float, ...] | None = None
    k: float = 1.0
    per_class: bool = False
    ddof: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments of a registered rule

    def __post_init__(self) -> None:
        if self.method not in METHODS and self.method not in SELECTION_REGISTRY:
            raise PseudoLabelError(
                f"selection method must be one of {selection_methods()} (or one registered from a module in "
                f"'imports'), got {self.method!r}"
            )
        if self.method == "thresholds" and self.thresholds is None:
            raise PseudoLabelError("selection method 'thresholds' needs a 'thresholds' list (one per class)")


def row_thresholds(
    labels: np.ndarray, confidence: np.ndarray, spec: SelectionSpec, num_classes: int
) -> np.ndarray:
    """The threshold each row is compared with (float64, -inf when everything is kept)."""
    labels = np.asarray(labels)
    confidence = np.asarray(confidence, dtype=np.float64)
    if spec.method == "all":
        return np.full(labels.shape, -np.inf)
    if spec.method not in METHODS:
        limits = np.asarray(
            SELECTION_REGISTRY.get(spec.method)(labels, confidence, num_classes, **dict(spec.params)),
            dtype=np.float64,
        )
        if limits.shape != labels.shape:
            raise PseudoLabelError(
                f"selection rule {spec.method} returned {limits.shape} limits for {labels.shape[0]} rows"
            )
        return limits
    if spec.method == "thresholds":
        table = np.asarray(spec.thresholds, dtype=np.float64)
        if table.shape != (num_classes,):
            raise PseudoLabelError(
                f"selection needs {num_classes} thresholds (one per class), got {table.size}"
            )
        return table[labels]
    out = np.empty(labels.shape, dtype=np.float64)
    groups = (
        [np.arange(labels.size)]
        if not spec.per_class
        else [np.flatnonzero(labels == c) for c in range(num_classes)]
    )
    for idx in groups:
        if idx.size == 0:
            continue
        values = confidence[idx]
        std = float(np.std(values, ddof=spec.ddof)) if values.size > spec.ddof else 0.0
        out[idx] = float(np.mean(values)) - spec.k * std
    return out


def select_rows(
    labels: np.ndarray, confidence: np.ndarray, spec: SelectionSpec, num_classes: int
) -> np.ndarray:
    """Boolean mask of the rows to keep (``>=`` the threshold; strictly ``>`` for the mean - k*std rule)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    limits = row_thresholds(labels, confidence, spec, num_classes)
    return confidence > limits if spec.method == "mean_minus_k_std" else confidence >= limits
