"""Metrics on hand-made cases: top-k with unlabelled rows, confusion matrix, per-class accuracy, the PNG."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nightcrawler.engine.metrics import (
    classification_metrics,
    confusion_matrix,
    per_class_accuracy,
    plot_confusion_matrix,
    topk_accuracies,
    topk_correct,
)

# 5 videos, 4 classes. Ranking per row (best first):
#   row 0: 2,1,0,3   label 2 -> top1 hit
#   row 1: 0,3,1,2   label 1 -> top3 hit only
#   row 2: 3,2,1,0   label 0 -> only top4
#   row 3: 1,0,2,3   label 1 -> top1 hit
#   row 4: 0,1,2,3   label -1 (unlabelled: ignored)
SCORES = np.array(
    [
        [0.2, 0.5, 0.9, -1.0],
        [4.0, 1.0, 0.0, 2.0],
        [-3.0, -2.0, -1.0, 0.5],
        [0.1, 0.7, 0.0, -0.1],
        [9.0, 8.0, 7.0, 6.0],
    ],
    dtype=np.float32,
)
LABELS = np.array([2, 1, 0, 1, -1])


def test_topk_correct_and_accuracy_skip_unlabelled_rows():
    assert topk_correct(SCORES, LABELS, ks=(1, 2, 3, 4, 5)) == [2, 2, 3, 4, 4]
    acc = topk_accuracies(torch.from_numpy(SCORES), torch.from_numpy(LABELS), ks=(1, 3))
    assert acc == pytest.approx([50.0, 75.0])


def test_topk_without_labels_is_nan():
    assert topk_correct(SCORES, np.full(5, -1), ks=(1, 5)) == [0, 0]
    assert all(math.isnan(a) for a in topk_accuracies(SCORES, np.full(5, -1)))


def test_confusion_matrix_and_per_class_accuracy():
    cm = confusion_matrix(SCORES, LABELS)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[2, 2] = 1  # row 0
    expected[1, 0] = 1  # row 1 predicted 0
    expected[0, 3] = 1  # row 2 predicted 3
    expected[1, 1] = 1  # row 3
    np.testing.assert_array_equal(cm, expected)
    pc = per_class_accuracy(cm)
    assert pc[0] == 0.0 and pc[1] == 50.0 and pc[2] == 100.0 and math.isnan(pc[3])


def test_classification_metrics_json_ready():
    m = classification_metrics(SCORES, LABELS, class_names=["a", "b", "c", "d"])
    assert m["num_videos"] == 5 and m["num_labelled"] == 4
    assert m["top1_acc"] == 50.0 and m["top5_acc"] == 100.0
    assert m["per_class_acc"] == {"a": 0.0, "b": 50.0, "c": 100.0, "d": None}
    assert m["mean_class_acc"] == pytest.approx(50.0)
    assert m["confusion_matrix"][1] == [1, 1, 0, 0]
    json.dumps(m, allow_nan=False)  # strict JSON (NaN became null)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="out of range"):
        topk_correct(SCORES, np.array([0, 1, 2, 4, 0]))
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(SCORES, LABELS[:3])
    with pytest.raises(ValueError, match="class names"):
        classification_metrics(SCORES, LABELS, class_names=["a"])


def test_confusion_png_is_written(tmp_path):
    cm = confusion_matrix(SCORES, LABELS)
    out = plot_confusion_matrix(cm, tmp_path / "sub" / "cm.png", class_names=list("abcd"), title="t")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["cm.png"]  # no temporary file left behind
