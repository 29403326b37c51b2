"""The one-frame probe: its features on hand-made frames, and on generated videos whose classes one frame shows
(a class-specific appearance cue) or does not (motion only)."""

from __future__ import annotations

import numpy as np
import pytest

from nightcrawler.data.synthetic import Layout, SyntheticSpec, make_synthetic_dataset
from nightcrawler.method.probe import (
    VideoSet,
    colour_histogram,
    edge_histogram,
    fit_logistic,
    frame_features,
    middle_frame,
    probe_one_frame,
)
from nightcrawler.pseudo.io import read_labelled_list

CLASSES = 6


def test_colour_and_edge_histograms_of_hand_made_frames():
    frame = np.zeros((8, 10, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 255, 100, 0
    hist = colour_histogram(frame).reshape(3, 8)
    assert (
        (hist[0] == np.eye(8)[7]).all()
        and (hist[1] == np.eye(8)[3]).all()
        and (hist[2] == np.eye(8)[0]).all()
    )
    assert (edge_histogram(frame) == 0).all()  # a flat frame has no edges
    stripes = np.zeros((16, 16, 3), dtype=np.uint8)
    stripes[:, ::4] = 255  # vertical stripes: horizontal gradients, orientation 0 degrees
    edges = edge_histogram(stripes)
    assert edges.shape == (12,) and edges.sum() == pytest.approx(1.0) and edges[0] == pytest.approx(1.0)
    assert edge_histogram(stripes.transpose(1, 0, 2))[6] == pytest.approx(1.0)  # horizontal: 90 degrees
    assert frame_features(stripes).shape == (36,)


def test_logistic_regression_is_deterministic_and_fits_separable_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.1, (20, 4)) for c in range(3)])
    y = np.repeat(np.arange(3), 20)
    x[:, 3] = 1.0  # a constant feature is left at 0 by the standardisation
    a, b = fit_logistic(x, y, 3), fit_logistic(x, y, 3)
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert (a.predict(x) == y).mean() == 1.0 and np.isfinite(a.weight).all()


def _accuracy(root, cue: float) -> tuple[float, float]:
    spec = SyntheticSpec(
        seed=1, num_classes=CLASSES, frames=16, width=96, height=72, procedural=True, class_cue=cue,
        per_source=(("labeled", 12), ("dry", 8), ("dark", 0), ("arid", 0), ("test", 2)),
    )  # fmt: skip
    make_synthetic_dataset(root, spec)
    layout = Layout()
    sets = {
        "dry": VideoSet(root / layout.csv_val_dry, root / layout.root_dry),
        "dark": VideoSet(root / layout.csv_test, root / layout.root_test, gamma=0.25),
    }
    preds = probe_one_frame(VideoSet(root / "train_label.csv", root / layout.root_labeled), sets, CLASSES)
    dry = read_labelled_list(root / layout.csv_val_dry)
    test = read_labelled_list(root / "hidden" / "test_labels.csv")
    assert list(preds["dry"]) == list(dry) and set(preds["dark"]) == set(test)
    assert all(0 <= p < CLASSES for p in preds["dark"].values())
    return np.mean([preds["dry"][n] == dry[n] for n in dry]), len(dry)


def test_probe_reads_a_class_cue_from_one_frame_and_not_motion(tmp_path):
    with_cue, n = _accuracy(tmp_path / "cue", 1.0)
    without, _ = _accuracy(tmp_path / "motion", 0.0)
    assert n == 8 * CLASSES
    assert with_cue >= 2.5 / CLASSES  # chance is 1/6: the frame's colours and stripes give the class away
    assert without < with_cue - 0.2


def test_middle_frame_is_decoded_and_gamma_corrected(tmp_path):
    spec = SyntheticSpec(
        seed=2, num_classes=2, frames=12, width=32, height=24, procedural=True, videos_per_class=1
    )
    make_synthetic_dataset(tmp_path, spec)
    path = tmp_path / "Test" / "0.mp4"
    raw, bright = middle_frame(path), middle_frame(path, gamma=0.25)
    assert raw.shape == (24, 32, 3) and raw.dtype == np.uint8
    expected = np.floor(255.999 * (raw / 255.0) ** 0.25).astype(np.uint8)  # the original's gamma (spec 4)
    assert np.array_equal(bright, expected) and bright.mean() > raw.mean()
