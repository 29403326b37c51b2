"""Classification metrics on per-video (or per-clip) scores: top-k accuracy, confusion matrix, per-class
accuracy, and a confusion-matrix figure.

Scores are any ``(N, C)`` array-like (logits, probabilities or their sums); labels are ``(N,)`` integers, and a
label of -1 marks an unlabelled video, which every function here ignores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nightcrawler.utils.io import atomic_write


def _as_scores_and_labels(scores: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.as_tensor(np.asarray(scores) if not torch.is_tensor(scores) else scores).detach().cpu()
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).detach().cpu().long()
    if s.dim() != 2:
        raise ValueError(f"scores must be an (N, C) array, got shape {tuple(s.shape)}")
    if y.shape != (s.shape[0],):
        raise ValueError(f"labels must have shape ({s.shape[0]},) to match the scores, got {tuple(y.shape)}")
    if y.numel() and int(y.max()) >= s.shape[1]:
        raise ValueError(f"label {int(y.max())} is out of range for {s.shape[1]} classes")
    if y.numel() and int(y.min()) < -1:
        raise ValueError(f"labels must be >= -1 (-1: unlabelled), got {int(y.min())}")
    return s.float(), y


def labelled_mask(labels: Any) -> np.ndarray:
    """Boolean mask of the rows whose label is known (>= 0)."""
    return np.asarray(labels) >= 0


def topk_correct(scores: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of labelled rows whose label is among the ``k`` highest scores, for each ``k``.

    ``k`` larger than the number of classes counts every labelled row. Ties are broken as ``torch.topk``
    breaks them (the original's ``topks_correct``).
    """
    s, y = _as_scores_and_labels(scores, labels)
    keep = y >= 0
    s, y = s[keep], y[keep]
    if not ks:
        return []
    if s.shape[0] == 0:
        return [0 for _ in ks]
    kmax = min(max(ks), s.shape[1])
    top = torch.topk(s, kmax, dim=1, largest=True, sorted=True).indices  # (N, kmax)
    hit = top == y[:, None]
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def topk_accuracies(scores: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Top-k accuracy in percent over the labelled rows (NaN when no row is labelled)."""
    n = int(labelled_mask(labels).sum())
    return [100.0 * c / n if n else math.nan for c in topk_correct(scores, labels, ks)]


def confusion_matrix(scores: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """``(C, C)`` int64 counts of labelled rows: row = true class, column = top-1 predicted class."""
    s, y = _as_scores_and_labels(scores, labels)
    c = s.shape[1] if num_classes is None else num_classes
    if c != s.shape[1]:
        raise ValueError(f"num_classes is {c} but the scores have {s.shape[1]} columns")
    keep = y >= 0
    pred = s[keep].argmax(dim=1)
    flat = y[keep] * c + pred
    return torch.bincount(flat, minlength=c * c).reshape(c, c).numpy().astype(np.int64)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of every class in percent from a confusion matrix (NaN for classes without labelled rows)."""
    cm = np.asarray(cm)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(cm) / np.maximum(totals, 1), np.nan)


def classification_metrics(
    scores: Any, labels: Any, class_names: Sequence[str] | None = None, ks: Sequence[int] = (1, 5)
) -> dict[str, Any]:
    """Everything a test report needs, JSON-ready: counts, top-k, per-class accuracy, confusion matrix.

    Unlabelled rows (label -1) are counted in ``num_videos`` only.
    """
    s, y = _as_scores_and_labels(scores, labels)
    num_classes = s.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    cm = confusion_matrix(s, y)
    per_class = per_class_accuracy(cm)
    accs = topk_accuracies(s, y, ks)
    return {
        "num_videos": int(s.shape[0]),
        "num_labelled": int((y >= 0).sum()),
        **{f"top{k}_acc": _json_float(a) for k, a in zip(ks, accs)},
        "mean_class_acc": _json_float(
            float(np.nanmean(per_class)) if np.isfinite(per_class).any() else math.nan
        ),
        "per_class_acc": {n: _json_float(a) for n, a in zip(names, per_class)},
        "class_names": names,
        "confusion_matrix": cm.tolist(),
    }


def _json_float(x: float) -> float | None:
    """A float rounded for reports, or None (JSON null) for NaN."""
    x = float(x)
    return None if math.isnan(x) else round(x, 4)


def plot_confusion_matrix(
    cm: np.ndarray,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    title: str = "",
    normalize: bool = True,
) -> Path:
    """Writes a confusion-matrix heat map (rows: true class, columns: predicted) as a PNG, atomically.

    With ``normalize`` the colours show each row's fraction and the cells print counts.
    """
    from matplotlib.figure import Figure  # a bare Figure renders with Agg, leaving pyplot's backend alone

    cm = np.asarray(cm)
    c = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = max(4.0, 0.55 * c + 2.0)
    fig = Figure(figsize=(size, size * 0.9), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(c), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(c), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if c <= 30:
        threshold = 0.5 * (values.max() if values.size else 1.0)
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    colour = "white" if values[i, j] > threshold else "black"
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))
