"""Hand-made cases for the fusion rules and the row selection."""

from __future__ import annotations

import numpy as np
import pytest

from nightcrawler.pseudo.fuse import FusionSpec, Replacement, WeightRule, fuse_predictions, softmax
from nightcrawler.pseudo.io import PseudoLabelError
from nightcrawler.pseudo.thresholds import SelectionSpec, row_thresholds, select_rows


def _onehot_logits(classes, c=4, high=10.0):
    x = np.zeros((len(classes), c), np.float32)
    x[np.arange(len(classes)), classes] = high
    return x


def test_softmax_rows_sum_to_one():
    x = np.array([[1000.0, 0.0], [0.0, 0.0]], np.float32)  # large values must not overflow
    p = softmax(x, np.float64)
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])


def test_default_weights_and_class_rule():
    # model a votes class 2 on row 0 (rule applies), class 0 on row 1 (default weights)
    scores = {"a": _onehot_logits([2, 0]), "b": _onehot_logits([1, 1]), "c": _onehot_logits([3, 3])}
    spec = FusionSpec(
        weights={"a": 0.5, "b": 0.25, "c": 0.25},
        rules=(WeightRule("a", (2,), {"a": 0.8, "b": 0.2}),),
        precision="float64",
    )
    res = fuse_predictions(scores, spec)
    p = {k: softmax(v, np.float64) for k, v in scores.items()}
    np.testing.assert_allclose(res.fused[0], 0.8 * p["a"][0] + 0.2 * p["b"][0])
    np.testing.assert_allclose(res.fused[1], 0.5 * p["a"][1] + 0.25 * p["b"][1] + 0.25 * p["c"][1])
    assert res.branch.tolist() == [0, -1]
    assert res.labels.tolist() == [2, 0]
    assert res.replaced_by.tolist() == [-1, -1]
    assert spec.models == ("a", "b", "c")


def test_float32_arithmetic_order():
    rng = np.random.default_rng(3)
    scores = {k: rng.normal(size=(50, 11)).astype(np.float32) for k in "abcd"}
    spec = FusionSpec(weights={"a": 0.375, "b": 0.375, "c": 0.1, "d": 0.1})
    res = fuse_predictions(scores, spec)
    p = {k: softmax(v, np.float32) for k, v in scores.items()}
    f32 = np.float32
    expected = ((p["a"] * f32(0.375) + p["b"] * f32(0.375)) + p["c"] * f32(0.1)) + p["d"] * f32(0.1)
    assert res.fused.dtype == np.float64
    np.testing.assert_array_equal(res.fused, expected.astype(np.float64))  # bit-exact float32 recipe
    np.testing.assert_allclose(res.fused.sum(axis=1), 0.95, atol=1e-6)  # not renormalised


def test_replacement_takes_the_whole_row():
    scores = {"a": _onehot_logits([1, 2]), "sf": _onehot_logits([3, 0])}
    spec = FusionSpec(weights={"a": 1.0}, replacements=(Replacement((1,), "sf"),), precision="float64")
    res = fuse_predictions(scores, spec)
    np.testing.assert_array_equal(res.fused[0], softmax(scores["sf"], np.float64)[0])
    np.testing.assert_array_equal(res.blend[0], softmax(scores["a"], np.float64)[0])
    assert res.labels.tolist() == [3, 2]
    assert res.replaced_by.tolist() == [0, -1]


def test_normalise_and_no_transform():
    probs = {"a": np.array([[0.2, 0.8]]), "b": np.array([[0.6, 0.4]])}
    res = fuse_predictions(
        probs,
        FusionSpec(
            weights={"a": 0.25, "b": 0.25}, input_transform="none", normalise=True, precision="float64"
        ),
    )
    np.testing.assert_allclose(res.fused, [[0.4, 0.6]])


def test_fusion_errors():
    with pytest.raises(PseudoLabelError, match=r"needs model\(s\) \['b'\]"):
        fuse_predictions({"a": np.zeros((2, 3))}, FusionSpec(weights={"a": 0.5, "b": 0.5}))
    with pytest.raises(PseudoLabelError, match="differ in shape"):
        fuse_predictions(
            {"a": np.zeros((2, 3)), "b": np.zeros((3, 3))}, FusionSpec(weights={"a": 0.5, "b": 0.5})
        )
    with pytest.raises(PseudoLabelError, match="precision"):
        FusionSpec(weights={"a": 1.0}, precision="float16")
    with pytest.raises(PseudoLabelError, match=r"class ids \[7\] outside 0..2"):
        fuse_predictions(
            {"a": np.zeros((2, 3))}, FusionSpec(weights={"a": 1.0}, rules=(WeightRule("a", (7,), {"a": 1}),))
        )


def test_select_thresholds_all_and_k_std():
    labels = np.array([0, 0, 1, 1, 1])
    conf = np.array([0.5, 0.7, 0.2, 0.3, 0.9])
    spec = SelectionSpec("thresholds", thresholds=(0.6, 0.3))
    assert select_rows(labels, conf, spec, 2).tolist() == [False, True, False, True, True]  # >= is inclusive
    assert select_rows(labels, conf, SelectionSpec("all"), 2).all()
    # global mean - 1 * std (ddof=1): mean .52, std .2775 -> .2425: keeps all but 0.2
    keep = select_rows(labels, conf, SelectionSpec("mean_minus_k_std", k=1.0), 2)
    assert keep.tolist() == [True, True, False, True, True]
    assert row_thresholds(labels, conf, SelectionSpec("mean_minus_k_std", k=1.0), 2)[0] == pytest.approx(
        conf.mean() - conf.std(ddof=1)
    )
    # per class, k = 0: strictly above the class mean
    keep = select_rows(labels, conf, SelectionSpec("mean_minus_k_std", k=0.0, per_class=True), 2)
    assert keep.tolist() == [False, True, False, False, True]


def test_selection_errors():
    with pytest.raises(PseudoLabelError, match="one of"):
        SelectionSpec("median")
    with pytest.raises(PseudoLabelError, match="needs a 'thresholds' list"):
        SelectionSpec("thresholds")
    with pytest.raises(PseudoLabelError, match="needs 3 thresholds"):
        select_rows(np.array([0]), np.array([0.5]), SelectionSpec("thresholds", thresholds=(0.1, 0.2)), 3)
