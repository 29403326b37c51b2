"""tools/generate_csv.py: regenerates the synthetic set's lists exactly and reports bad folders and files."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest

from nightcrawler.data.synthetic import SyntheticSpec, make_synthetic_dataset
from tests.conftest import REPO_ROOT

LISTS = (
    "train_label+val_dry.csv",
    "val_dry.csv",
    "arid.csv",
    "dark_unlabel.csv",
    "total_unlabel.csv",
    "test.csv",
)


def _tool():
    spec = importlib.util.spec_from_file_location("generate_csv", REPO_ROOT / "tools" / "generate_csv.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ug2")
    spec = SyntheticSpec(seed=3, num_classes=3, videos_per_class=2, frames=8, procedural=True)
    make_synthetic_dataset(root, spec)
    return root


@pytest.fixture
def copy(data_root, tmp_path):
    """A private copy of the data root without its lists."""
    dst = tmp_path / "data"
    shutil.copytree(data_root, dst)
    for name in LISTS:
        (dst / name).unlink()
    return dst


def test_regenerated_lists_equal_the_synthetic_ones(data_root, tmp_path, capsys):
    out = tmp_path / "lists"
    assert _tool().main(["--prefix", str(data_root), "--out", str(out), "--check-videos"]) == 0
    for name in LISTS:
        assert (out / name).read_bytes() == (data_root / name).read_bytes(), name
    printed = capsys.readouterr().out
    assert "labeled        6   2625" in printed and "Drink=2 Jump=2 Pick=2" in printed
    assert "total_unlabel.csv (12 rows)" in printed


def test_existing_lists_need_force(data_root, tmp_path, capsys):
    tool = _tool()
    out = tmp_path / "lists"
    out.mkdir()
    (out / "arid.csv").write_text("keep me\n")
    assert tool.main(["--prefix", str(data_root), "--out", str(out)]) == 2
    assert "arid.csv already exist" in capsys.readouterr().err
    assert (out / "arid.csv").read_text() == "keep me\n"
    assert tool.main(["--prefix", str(data_root), "--out", str(out), "--force"]) == 0
    assert (out / "arid.csv").read_bytes() == (data_root / "arid.csv").read_bytes()


def test_unreadable_video_is_reported_and_nothing_written(copy, capsys):
    (copy / "Test" / "1.mp4").write_bytes(b"\x00" * 64)
    assert _tool().main(["--prefix", str(copy), "--check-videos"]) == 3
    err = capsys.readouterr().err
    assert "Test/1.mp4" in err and "1 unreadable video(s)" in err
    assert not any((copy / name).exists() for name in LISTS)


def test_unknown_class_and_missing_folder(copy, capsys):
    tool = _tool()
    (copy / "labeled_train" / "Train" / "mystery_01.mp4").write_bytes(b"")
    shutil.rmtree(copy / "Test")
    assert tool.main(["--prefix", str(copy)]) == 3
    err = capsys.readouterr().err
    assert "cannot tell the class of mystery_01.mp4" in err
    assert "test: folder not found" in err and "DATA.ROOT_TEST" in err
    (copy / "labeled_train" / "Train" / "mystery_01.mp4").unlink()
    assert tool.main(["--prefix", str(copy), "--allow-missing"]) == 0
    assert not (copy / "test.csv").exists() and (copy / "total_unlabel.csv").exists()


def test_class_folders_and_linked_arid_folders(copy):
    labeled = copy / "labeled_train" / "Train"
    (labeled / "Pick").mkdir()
    (labeled / "Pick" / "clip7.mp4").write_bytes(b"")
    (copy / "dark_train" / "Train" / "Jump").mkdir()  # the original layout links ARID classes in here
    (copy / "dark_train" / "Train" / "Jump" / "Jump_9_9.mp4").write_bytes(b"")
    assert _tool().main(["--prefix", str(copy)]) == 0
    merged = (copy / "train_label+val_dry.csv").read_text().splitlines()
    assert "Pick/clip7.mp4,2" in merged
    dark = (copy / "dark_unlabel.csv").read_text().splitlines()
    assert dark == [f"{i}.mp4,-1" for i in range(6)]


def test_class_from_name():
    tool = _tool()
    classes = ("Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand", "Turn", "Walk", "Wave")
    assert tool.class_from_name("Drink_001.mp4", classes) == 0
    assert tool.class_from_name("person3-wave-02.avi", classes) == 10
    assert tool.class_from_name("run_walk.mp4", classes) is None  # two class words: ambiguous
    assert tool.class_from_name("Running_1.mp4", classes) is None
