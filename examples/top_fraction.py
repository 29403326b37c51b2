"""A pseudo-label rule of one's own, in one file: keep the most confident ``fraction`` of each predicted class.

In a stage config (``configs/pseudo/stageX.yaml``)::

    imports: [../../examples/top_fraction.py]     # relative to the stage config's folder
    selection:
      method: top_fraction
      fraction: 0.5
"""

from __future__ import annotations

import numpy as np

from nightcrawler.pseudo.thresholds import SELECTION_REGISTRY


@SELECTION_REGISTRY.register()
def top_fraction(
    labels: np.ndarray, confidence: np.ndarray, num_classes: int, fraction: float = 0.5
) -> np.ndarray:
    """Per row, the confidence its class's top ``fraction`` starts at (rows of a class at or above it are kept;
    every class keeps at least one row)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"top_fraction needs 0 < fraction <= 1, got {fraction}")
    limits = np.full(labels.shape, np.inf)
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        if rows.size:
            keep = max(1, int(np.ceil(fraction * rows.size)))
            limits[rows] = np.sort(confidence[rows])[::-1][keep - 1]
    return limits
