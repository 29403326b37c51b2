"""PKL / CSV reading, alignment by name and the error messages of nightcrawler.pseudo.io."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from nightcrawler.pseudo.io import (
    PseudoLabelError,
    align_outputs,
    load_pkl,
    read_labelled_list,
    read_pseudo_csv,
    read_video_list,
    write_pseudo_csv,
)

NAMES = ["a.mp4", "b.mp4", "Walk/Walk_1_2.mp4", "d.mp4"]


def _preds(n=4, c=11, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32)


def test_load_pkl_with_and_without_names(tmp_path, write_pkl):
    preds = _preds()
    named = load_pkl(write_pkl(tmp_path / "a.pkl", preds, names=np.array(NAMES)), num_classes=11)
    assert named.names == tuple(NAMES)
    assert named.preds.dtype == np.float32 and np.array_equal(named.preds, preds)
    assert named.labels.tolist() == [-1] * 4
    plain = load_pkl(write_pkl(tmp_path / "b.pkl", preds))
    assert plain.names is None and plain.num_videos == 4 and plain.num_classes == 11


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_pkl_all_protocols(tmp_path, protocol):
    path = tmp_path / "p.pkl"
    data = {
        "video_preds": _preds(),
        "video_labels": np.arange(4),
        "video_names": np.array(NAMES, dtype=object),
    }
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert load_pkl(path).names == tuple(NAMES)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_load_pkl_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"video_preds": _Evil()}))
    with pytest.raises(PseudoLabelError, match="refusing to load"):
        load_pkl(path)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"video_labels": np.zeros(4)}, "expected a dict with key 'video_preds'"),
        ({"video_preds": np.zeros(11)}, "numeric N x C array"),
        ({"video_preds": np.zeros((4, 10))}, "has 10 classes, expected 11"),
        ({"video_preds": np.full((4, 11), np.nan)}, "row 0 holds NaN"),
        ({"video_preds": np.zeros((4, 11)), "video_labels": np.zeros(3)}, r"'video_labels' has shape \(3,\)"),
        ({"video_preds": np.zeros((4, 11)), "video_names": ["a", "b"]}, "2 'video_names' for 4 rows"),
        ({"video_preds": np.zeros((2, 11)), "video_names": ["a", "a"]}, "video 'a' appears more than once"),
    ],
)
def test_load_pkl_errors(tmp_path, data, message):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(PseudoLabelError, match=message) as info:
        load_pkl(path, num_classes=11)
    assert str(path) in str(info.value)


def test_missing_pkl(tmp_path):
    with pytest.raises(PseudoLabelError, match="PKL not found: .*nope.pkl"):
        load_pkl(tmp_path / "nope.pkl")


def test_align_by_name_reorders(tmp_path, write_pkl):
    preds = _preds()
    a = load_pkl(write_pkl(tmp_path / "a.pkl", preds, names=NAMES))
    perm = [2, 0, 3, 1]
    b = load_pkl(write_pkl(tmp_path / "b.pkl", preds[perm] * 2, names=[NAMES[i] for i in perm]))
    aligned = align_outputs({"x": a, "y": b})
    assert aligned.names == tuple(NAMES)
    np.testing.assert_array_equal(aligned.preds["y"], preds * 2)
    # to an explicit list order: the list wins
    order = NAMES[::-1]
    aligned = align_outputs({"x": a, "y": b}, order)
    np.testing.assert_array_equal(aligned.preds["x"], preds[::-1])
    np.testing.assert_array_equal(aligned.preds["y"], preds[::-1] * 2)


def test_align_mismatch_names_files_and_videos(tmp_path, write_pkl):
    a = load_pkl(write_pkl(tmp_path / "first.pkl", _preds(), names=NAMES))
    other = [*NAMES[:2], "zzz.mp4", NAMES[3]]
    b = load_pkl(write_pkl(tmp_path / "second.pkl", _preds(), names=other))
    with pytest.raises(PseudoLabelError) as info:
        align_outputs({"x": a, "y": b})
    text = str(info.value)
    assert "first.pkl" in text and "second.pkl" in text
    assert "row 2: 'Walk/Walk_1_2.mp4' vs 'zzz.mp4'" in text
    assert "1 only in" in text


def test_align_unnamed_needs_list(tmp_path, write_pkl):
    a = load_pkl(write_pkl(tmp_path / "old.pkl", _preds()))
    with pytest.raises(PseudoLabelError, match=r"old.pkl has no 'video_names'; give the list CSV"):
        align_outputs({"x": a})
    aligned = align_outputs({"x": a}, NAMES)
    assert aligned.names == tuple(NAMES)
    with pytest.raises(PseudoLabelError, match=r"old.pkl has 4 rows but the list CSV lists 3 videos"):
        align_outputs({"x": a}, NAMES[:3])


def test_align_class_count_mismatch(tmp_path, write_pkl):
    a = load_pkl(write_pkl(tmp_path / "a.pkl", _preds(c=11), names=NAMES))
    b = load_pkl(write_pkl(tmp_path / "b.pkl", _preds(c=10), names=NAMES))
    with pytest.raises(
        PseudoLabelError, match=r"disagree on the number of classes: .*a.pkl has 11, .*b.pkl has 10"
    ):
        align_outputs({"x": a, "y": b})


def test_align_extra_videos(tmp_path, write_pkl):
    a = load_pkl(write_pkl(tmp_path / "a.pkl", _preds(), names=NAMES))
    with pytest.raises(PseudoLabelError, match="do not hold the same videos"):
        align_outputs({"x": a}, NAMES[1:3])
    aligned = align_outputs({"x": a}, NAMES[1:3], allow_extra=True)
    np.testing.assert_array_equal(aligned.preds["x"], load_pkl(tmp_path / "a.pkl").preds[1:3])


def test_read_lists(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("0.mp4,-1\r\nWalk/Walk_1_2.mp4,9\n\n")
    assert read_video_list(path) == (["0.mp4", "Walk/Walk_1_2.mp4"], ["-1", "9"])
    assert read_labelled_list(path) == {"0.mp4": -1, "Walk/Walk_1_2.mp4": 9}
    (tmp_path / "bad.csv").write_text("x.mp4,notanumber\n")
    with pytest.raises(PseudoLabelError, match="bad.csv row 0: label 'notanumber'"):
        read_labelled_list(tmp_path / "bad.csv")
    with pytest.raises(PseudoLabelError, match="list CSV not found"):
        read_video_list(tmp_path / "missing.csv")


def test_pseudo_csv_round_trip(tmp_path):
    probs = np.array([[0.1, 0.30000000000000004, 0.6], [1 / 3, 0.5, 1 / 6]])
    path = write_pseudo_csv(tmp_path / "sub" / "p.csv", ["x.mp4", "y.mp4"], np.array([2, 1]), probs)
    text = path.read_text()
    assert text.splitlines()[0] == "x.mp4,2,0.1,0.30000000000000004,0.6"
    assert text.endswith("\n") and "\r" not in text
    names, labels, back = read_pseudo_csv(path)
    assert names == ["x.mp4", "y.mp4"] and labels.tolist() == [2, 1]
    np.testing.assert_array_equal(back, probs)  # shortest repr round-trips exactly
    assert [p.name for p in path.parent.iterdir()] == ["p.csv"]  # no temporary left behind
