"""The one-frame probe: how much of a video set's classes one still frame gives away.

Each video is reduced to 36 numbers of its middle frame (optionally gamma-corrected first): a colour histogram
(8 bins per RGB channel) and an edge-orientation histogram (12 bins of gradient orientation over 0-180 degrees,
weighted by gradient magnitude), each normalised to sum 1. A multinomial logistic regression on the labelled
videos' features (standardised with their mean and std, L2-regularised, full-batch L-BFGS in float64) then
predicts the class of other videos. A probe far above chance means a single frame, without any motion, carries
the class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nightcrawler.data.decoders import open_video
from nightcrawler.data.transforms import gamma_lut
from nightcrawler.pseudo.io import read_video_list

COLOUR_BINS, EDGE_BINS = 8, 12


@dataclass(frozen=True)
class VideoSet:
    """Videos of a list (``name,label`` rows) under ``root``; ``gamma`` corrects their frames first (None: off)."""

    csv: Path
    root: Path
    gamma: float | None = None

    def videos(self) -> tuple[list[str], list[int]]:
        """The list's names and labels (-1 when unknown), in list order."""
        names, fields = read_video_list(self.csv)
        return names, [int(f.split(",")[0]) for f in fields]


def middle_frame(path: str | os.PathLike, gamma: float | None = None) -> np.ndarray:
    """The middle frame (index ``num_frames // 2``) of a video as uint8 ``(H, W, 3)``, gamma-corrected by a LUT."""
    with open_video(path) as reader:
        frame = reader.frames_at([int(reader.num_frames) // 2])[0]
    if gamma is not None:
        frame = gamma_lut(gamma)[frame.long()]
    return frame.numpy()


def colour_histogram(frame: np.ndarray, bins: int = COLOUR_BINS) -> np.ndarray:
    """Per-channel histograms of a uint8 RGB frame over 0..255 (``3 * bins`` numbers, each channel's sums to 1)."""
    which = frame.astype(np.int64) * bins // 256
    hists = [np.bincount(which[..., c].ravel(), minlength=bins) for c in range(3)]
    return np.concatenate([h / max(h.sum(), 1) for h in hists]).astype(np.float64)


def edge_histogram(frame: np.ndarray, bins: int = EDGE_BINS) -> np.ndarray:
    """Histogram of gradient orientation (0-180 degrees, ``bins`` bins) of a frame's grey levels, each pixel
    weighted by its gradient magnitude; sums to 1 (all zeros for a flat frame)."""
    grey = frame.astype(np.float64).mean(-1)
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    which = np.minimum((angle / np.pi * bins).astype(np.int64), bins - 1)
    hist = np.bincount(which.ravel(), weights=magnitude.ravel(), minlength=bins)
    total = hist.sum()
    return hist / total if total > 0 else hist


def frame_features(frame: np.ndarray) -> np.ndarray:
    """The probe's 36 numbers of one frame: colour then edge-orientation histogram."""
    return np.concatenate([colour_histogram(frame), edge_histogram(frame)])


def set_features(videos: VideoSet) -> tuple[list[str], list[int], np.ndarray]:
    """Names, labels and ``(N, 36)`` features of every video of a set."""
    names, labels = videos.videos()
    feats = [frame_features(middle_frame(videos.root / n, videos.gamma)) for n in names]
    return names, labels, np.stack(feats)


@dataclass
class LogisticProbe:
    """A fitted multinomial logistic regression on standardised features."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)

    def predict(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.std
        return (z @ self.weight + self.bias).argmax(1)


def fit_logistic(
    features: np.ndarray, labels: Sequence[int], num_classes: int, l2: float = 1e-2, max_iter: int = 500
) -> LogisticProbe:
    """Multinomial logistic regression: mean cross-entropy + ``l2 * |W|^2 / 2`` minimised by full-batch L-BFGS
    (float64, deterministic) on the features standardised with their own mean and std."""
    mean = features.mean(0)
    std = features.std(0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature stays 0
    x = torch.from_numpy((features - mean) / std)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LogisticProbe(mean, std, w.detach().numpy(), b.detach().numpy())


def probe_one_frame(
    train: VideoSet, eval_sets: Mapping[str, VideoSet], num_classes: int
) -> dict[str, dict[str, int]]:
    """Fits the probe on ``train``'s labelled videos; returns, per evaluation set, each video's predicted class
    (name -> class, in list order)."""
    _, labels, feats = set_features(train)
    probe = fit_logistic(feats, labels, num_classes)
    out = {}
    for name, videos in eval_sets.items():
        names, _, x = set_features(videos)
        out[name] = dict(zip(names, probe.predict(x).tolist()))
    return out
