"""Which fused rows become pseudo labels: per-class thresholds, keep-all, or the mean - k*std rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nightcrawler.pseudo.io import PseudoLabelError

METHODS = ("thresholds", "all", "mean_minus_k_std")


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

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PseudoLabelError(f"selection method must be one of {METHODS}, got {self.method!r}")
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
