"""Fault injection: PKLs that disagree and malformed CSVs fail with a data error naming the file(s)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from nightcrawler.data.csvs import CsvFormatError, parse_video_list
from nightcrawler.pseudo.cli import stage_main, vote_main
from nightcrawler.pseudo.io import PseudoLabelError, read_pseudo_csv, read_video_list
from nightcrawler.utils.errors import EXIT_DATA
from tests.conftest import golden_dir

PKL = "aridx32x224x1x1.pkl"
FOLDERS = ("uniformer_b32_ssv2", "uniformer_b32_k600", "mvit_b32_k600", "sf32_k700")
BAD = "mvit_b32_k600"


def _golden(sub: str) -> Path:
    path = golden_dir() / sub / "inputs"
    if not path.is_dir():
        pytest.skip(f"golden reference data not found at {path}")
    return path


def _load(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def _dump(path: Path, data: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(data, f)


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _drop_key(path: Path) -> None:
    data = _load(path)
    _dump(path, {"video_labels": data["video_labels"]})


def _fewer_classes(path: Path) -> None:
    data = _load(path)
    data["video_preds"] = data["video_preds"][:, :-1]
    _dump(path, data)


def _fewer_rows(path: Path) -> None:
    data = _load(path)
    data["video_preds"], data["video_labels"] = data["video_preds"][:-1], data["video_labels"][:-1]
    _dump(path, data)


def _names(n: int) -> list[str]:
    return [f"{i}.mp4" for i in range(n)]


def _other_video_set(path: Path) -> None:
    data = _load(path)
    names = _names(len(data["video_preds"]))
    names[7] = "not_in_the_list.mp4"
    data["video_names"] = names
    _dump(path, data)


def _duplicate_name(path: Path) -> None:
    data = _load(path)
    names = _names(len(data["video_preds"]))
    names[3] = names[4]
    data["video_names"] = names
    _dump(path, data)


def _nan_row(path: Path) -> None:
    data = _load(path)
    data["video_preds"] = np.array(data["video_preds"], copy=True)
    data["video_preds"][2, 0] = np.nan
    _dump(path, data)


def _not_a_pickle(path: Path) -> None:
    path.write_text("video_preds,video_labels\n1,2\n")


# corruption of the mvit PKL, words the message must hold besides the file's path
PKL_FAULTS = [
    (_truncate, "cannot read PKL"),
    (_not_a_pickle, "cannot read PKL"),
    (_drop_key, "video_preds"),
    (_fewer_classes, "classes"),
    (_fewer_rows, "299 rows"),
    (_other_video_set, "not_in_the_list.mp4"),
    (_duplicate_name, "4.mp4"),
    (_nan_row, "row 2"),
]


@pytest.fixture
def stage_root(tmp_path) -> Path:
    inputs = _golden("pseudo")
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    shutil.copy(inputs / "total_unlabel.csv", root / "data" / "total_unlabel.csv")
    for folder in FOLDERS:
        (root / "exp_adapt_bn" / folder).mkdir(parents=True)
        shutil.copy(inputs / folder / PKL, root / "exp_adapt_bn" / folder / PKL)
    return root


def _stage(root: Path, out: Path) -> int:
    return stage_main(1, ["--root", str(root), "--pkl-name", PKL, "--out", str(out), "--no-report"])


@pytest.mark.parametrize("corrupt,words", PKL_FAULTS, ids=[f.__name__.strip("_") for f, _ in PKL_FAULTS])
def test_stage_script_refuses_a_bad_pkl_naming_it(stage_root, tmp_path, capsys, corrupt, words):
    bad = stage_root / "exp_adapt_bn" / BAD / PKL
    corrupt(bad)
    out = tmp_path / "stage1.csv"
    assert _stage(stage_root, out) == EXIT_DATA
    err = capsys.readouterr().err
    assert str(bad) in err and words in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_stage_script_accepts_named_pkls_in_another_order(stage_root, tmp_path, capsys):
    """Same videos, other order: aligned by name, so the pseudo CSV is the one of the positional run."""
    assert _stage(stage_root, tmp_path / "plain.csv") == 0
    bad = stage_root / "exp_adapt_bn" / BAD / PKL
    data = _load(bad)
    order = np.random.default_rng(0).permutation(len(data["video_preds"]))
    names = np.array(read_video_list(stage_root / "data" / "total_unlabel.csv")[0])
    _dump(bad, {"video_preds": data["video_preds"][order], "video_labels": data["video_labels"][order],
                "video_names": list(names[order])})  # fmt: skip
    assert _stage(stage_root, tmp_path / "shuffled.csv") == 0, capsys.readouterr().err
    assert (tmp_path / "plain.csv").read_bytes() == (tmp_path / "shuffled.csv").read_bytes()


@pytest.fixture
def vote_root(tmp_path) -> Path:
    root = tmp_path / "vote"
    shutil.copytree(_golden("vote"), root)
    return root


@pytest.mark.parametrize(
    "corrupt,words", PKL_FAULTS[:5], ids=[f.__name__.strip("_") for f, _ in PKL_FAULTS[:5]]
)
def test_vote_refuses_a_bad_pkl_naming_it(vote_root, capsys, corrupt, words):
    bad = vote_root / "exp_pseudo_stage4" / BAD / "testx32x224x3x3.pkl"
    corrupt(bad)
    assert vote_main(["--root", str(vote_root), "--no-report"]) == EXIT_DATA
    err = capsys.readouterr().err
    assert str(bad) in err and words.replace("299 rows", "rows") in err, err
    assert not (vote_root / "submission" / "arid_pred.csv").exists()


def test_vote_refuses_a_test_csv_that_lists_other_videos(vote_root, capsys):
    csv = vote_root / "data" / "test.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:-1]) + "\n")
    assert vote_main(["--root", str(vote_root), "--no-report"]) == EXIT_DATA
    err = capsys.readouterr().err
    assert str(csv) in err and "rows" in err, err


# ------------------------------------------------------------------------------------------- training CSVs
CSV_FAULTS = [
    ("", "empty"),
    ("a.mp4\nb.mp4\n", ":1: expected '<path>,<label>'"),  # the label column is missing
    ("a.mp4,1\nb.mp4,one\n", ":2: label must be an integer"),
    ("a.mp4,1\nb.mp4,2.5\n", ":2: label must be an integer"),
    ("a.mp4,1\nb.mp4,11\n", ":2: label must be in [0, 11)"),  # out of range for 11 classes
    ("a.mp4,1\nb.mp4,-1\n", ":2: label must be in [0, 11)"),  # the unknown label in a training list
    ("a.mp4;1\nb.mp4;2\n", ":1: expected '<path>,<label>'"),  # wrong delimiter
    ("a.mp4,1,2\n", ":1: expected '<path>,<label>'"),  # an extra column
    ("a.mp4,1\na.mp4,2\n", ":2: video 'a.mp4' is already listed on line 1"),  # the same video twice
]


@pytest.mark.parametrize("text,words", CSV_FAULTS, ids=[repr(t)[:24] for t, _ in CSV_FAULTS])
def test_training_csv_reader_names_file_and_line(tmp_path, text, words):
    path = tmp_path / "train.csv"
    path.write_text(text)
    with pytest.raises(CsvFormatError) as err:
        parse_video_list(path, num_classes=11, separator=",", require_label=True)
    assert f"{path}{words}" in str(err.value) if words.startswith(":") else words in str(err.value)
    assert str(path) in str(err.value)


PSEUDO_CSV_FAULTS = [
    ("", "empty"),
    ("a.mp4,1\n", "line 1"),  # no probabilities
    ("a.mp4,1," + ",".join(["0.1"] * 11) + "\n" + "a.mp4,2," + ",".join(["0.1"] * 11) + "\n", "a.mp4"),
    ("a.mp4,x," + ",".join(["0.1"] * 11) + "\n", "line 1"),
    ("a.mp4,1," + ",".join(["0.1"] * 10) + "\n" + "b.mp4,1," + ",".join(["0.1"] * 11) + "\n", "line"),
]


@pytest.mark.parametrize("text,words", PSEUDO_CSV_FAULTS, ids=[repr(t)[:24] for t, _ in PSEUDO_CSV_FAULTS])
def test_pseudo_csv_reader_names_file_and_line(tmp_path, text, words):
    path = tmp_path / "pseudo.csv"
    path.write_text(text)
    with pytest.raises((PseudoLabelError, CsvFormatError)) as err:
        read_pseudo_csv(path)
        parse_video_list(path, num_classes=11, separator=",", require_label=True, require_probs=True)
    assert str(path) in str(err.value) and words in str(err.value)
