"""The synthetic dark-video set: layout and lists, determinism, class motions and low-light statistics."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from nightcrawler.data.csvs import parse_video_list
from nightcrawler.data.decoders import open_video
from nightcrawler.data.synthetic import (
    CLASS_NAMES,
    DARK_PLACEMENT,
    EXTRA_MOTIONS,
    FOOTAGE_DARK,
    FOOTAGE_NORMAL,
    MOTIONS,
    NORMAL_PLACEMENT,
    Layout,
    SyntheticSpec,
    VideoJob,
    _background,
    make_synthetic_dataset,
    measure_brightness,
    motion_track,
    plan_videos,
    render_video,
)
from nightcrawler.data.transforms import gamma_lut

SPEC = SyntheticSpec(seed=7, num_classes=3, videos_per_class=2, labeled_per_class=3, frames=16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    summary = make_synthetic_dataset(out, SPEC)
    return out, summary


def _digest(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "synthetic.json"
    }


def test_layout_and_lists(built):
    out, summary = built
    layout = Layout()
    assert summary.videos == {"labeled": 9, "dry": 6, "dark": 6, "arid": 6, "test": 6}
    lists = {n: parse_video_list(out / n, num_classes=3) for n in summary.csvs}
    assert {n: len(r) for n, r in lists.items()} == {
        "train_label+val_dry.csv": 15,
        "train_label.csv": 9,
        "val_dry.csv": 6,
        "arid.csv": 6,
        "dark_unlabel.csv": 6,
        "total_unlabel.csv": 12,
        "test.csv": 6,
    }
    merged, dry = lists["train_label+val_dry.csv"], lists["val_dry.csv"]
    assert merged[:9] == lists["train_label.csv"]
    assert merged[9:] == dry and all(r.path.endswith(".avi") for r in dry)
    assert [r.label for r in merged[:9]] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(CLASS_NAMES[r.label] in r.path for r in merged)
    arid = lists["arid.csv"]
    assert [r.path for r in arid[:2]] == ["Drink/Drink_1_1.mp4", "Drink/Drink_1_2.mp4"]
    assert all(r.path.split("/")[0] == CLASS_NAMES[r.label] for r in arid)
    for name in ("dark_unlabel.csv", "test.csv"):
        assert [r.path for r in lists[name]] == [f"{i}.mp4" for i in range(6)]
        assert {r.label for r in lists[name]} == {-1}
    total = lists["total_unlabel.csv"]
    assert [r.path for r in total] == [r.path for r in lists["dark_unlabel.csv"] + arid]
    assert {r.label for r in total} == {-1}
    # every listed video exists under its source folder (dry-run rows of the merged list live in dry_run/)
    roots = {
        "train_label+val_dry.csv": layout.root_labeled,
        "val_dry.csv": layout.root_dry,
        "arid.csv": layout.root_arid,
        "dark_unlabel.csv": layout.root_dark,
        "test.csv": layout.root_test,
    }
    for name, root in roots.items():
        for row in lists[name]:
            assert (out / root / row.path).is_file() or (out / layout.root_dry / row.path).is_file()
    # hidden labels: each class equally often, shuffled over the anonymous names
    hidden = parse_video_list(out / "hidden/test_labels.csv", num_classes=3, require_label=True)
    assert [r.path for r in hidden] == [r.path for r in lists["test.csv"]]
    assert sorted(r.label for r in hidden) == [0, 0, 1, 1, 2, 2]
    dark_hidden = parse_video_list(out / "hidden/dark_unlabel_labels.csv", num_classes=3, require_label=True)
    total_hidden = parse_video_list(
        out / "hidden/total_unlabel_labels.csv", num_classes=3, require_label=True
    )
    assert total_hidden == dark_hidden + arid
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["spec"]["seed"] == 7 and manifest["class_names"] == ["Drink", "Jump", "Pick"]


def test_videos_are_real_h264_and_mpeg4_files(built):
    out, _ = built
    with open_video(out / "Test/0.mp4") as reader:
        assert reader.probe.codec == "h264" and (reader.width, reader.height) == (320, 240)
        assert round(reader.fps) == 30 and 12 <= reader.num_frames <= 16
    with open_video(out / "dry_run/Validation/Drink_dry_001.avi") as reader:
        assert reader.probe.codec == "mpeg4" and reader.frames_at([0]).shape == (1, 240, 320, 3)


def test_same_seed_same_bytes_other_seed_other_videos(built, tmp_path):
    out, _ = built
    small = SyntheticSpec(seed=7, num_classes=3, videos_per_class=2, labeled_per_class=3, frames=16)
    again = tmp_path / "again"
    make_synthetic_dataset(again, small, workers=2)  # worker processes do not change the output
    assert _digest(again) == _digest(out)
    other = tmp_path / "other"
    make_synthetic_dataset(other, SyntheticSpec(seed=8, num_classes=1, videos_per_class=1, frames=16))
    assert _digest(other)["Test/0.mp4"] != _digest(out)["Test/0.mp4"]


def _mean_brightness(paths, lut=None):
    values = []
    for path in paths:
        with open_video(path) as reader:
            frames = reader.frames_at(range(reader.num_frames))
        if lut is not None:
            frames = lut[frames.long()]
        values.append(frames.float().mean().item())
    return float(np.mean(values))


def test_dark_videos_are_arid_like_and_gamma_does_not_undo_the_camera(built):
    out, _ = built
    layout = Layout()
    normal = sorted((out / layout.root_labeled).glob("*")) + sorted((out / layout.root_dry).glob("*"))
    dark = sorted((out / layout.root_dark).glob("*.mp4")) + sorted((out / layout.root_arid).glob("*/*.mp4"))
    normal_mean, dark_mean = _mean_brightness(normal), _mean_brightness(dark)
    assert 60 < normal_mean < 160
    assert dark_mean < 0.25 * normal_mean  # a large shift of the input statistics (BatchNorm sees it)
    stats = measure_brightness(sorted((out / layout.root_test).glob("*.mp4")))
    assert stats["videos"] == 6
    # ARID-like: dim on average, with lamps and highlights beside crushed blacks (std above the mean)
    assert all(0.04 < m < 0.13 for m in stats["mean"]), stats
    assert all(r > 0.9 for r in stats["std_over_mean"]), stats
    # the camera adds fresh sensor noise to every frame, and gamma 0.25 brightens it with the signal: the same
    # scene without the camera differs from the gamma-corrected capture by far more than the encoder's error
    job = VideoJob("dark", "0.mp4", 0, (7, 3, 1), 4, True)
    frames = render_video(job, SyntheticSpec(frames=4, procedural=True)).astype(np.float32)
    assert np.abs(frames[0] - frames[1]).mean() > 1.0
    lut = gamma_lut(0.25).numpy()
    brightened = lut[frames.astype(np.int64)]
    assert np.abs(brightened[0] - brightened[1]).mean() > 8.0  # 8-bit levels of frame-to-frame noise


def test_dark_targets_come_from_other_scenes_and_camera_placements():
    W, H = 128, 96
    gen = torch.Generator().manual_seed(0)
    room = _background((), np.random.default_rng(1), gen, W, H, dark=True)
    field = _background((), np.random.default_rng(1), gen, W, H, dark=False)
    assert room.shape == field.shape == (3, H, W) and not torch.allclose(room, field)
    assert set(FOOTAGE_NORMAL).isdisjoint(FOOTAGE_DARK)
    assert (
        DARK_PLACEMENT.size[1] <= NORMAL_PLACEMENT.size[1] and DARK_PLACEMENT.cy[0] > NORMAL_PLACEMENT.cy[0]
    )
    starts = [
        motion_track("Push", 8, np.random.default_rng(s), W, H, DARK_PLACEMENT)["cy"][0] for s in range(20)
    ]
    assert min(starts) > (DARK_PLACEMENT.cy[0] * H) - 5  # camera shake moves it a few pixels at most


def test_motions_differ_the_way_their_names_say():
    W, H, n = 320, 240, 64

    def track(name, seed=0):
        return motion_track(name, n, np.random.default_rng(seed), W, H)

    for seed in range(5):
        sit, stand = track("Sit", seed), track("Stand", seed)
        assert sit["cy"][-1] - sit["cy"][0] > 0.15 * H  # image y grows downwards: Sit ends lower
        assert stand["cy"][0] - stand["cy"][-1] > 0.15 * H
        travel = {m: abs(track(m, seed)["cx"][-1] - track(m, seed)["cx"][0]) for m in ("Push", "Walk", "Run")}
        assert travel["Run"] > travel["Walk"] > travel["Push"] > 0.15 * W
        turn = track("Turn", seed)
        assert turn["sx"].min() < 0 < turn["sx"].max()  # the object shows its back (mirrored) half way
        pour = track("Pour", seed)
        assert np.abs(pour["angle"]).max() > 60 and np.ptp(pour["cy"]) < 0.05 * H
        wave = track("Wave", seed)
        crossings = np.sum(np.diff(np.sign(wave["cx"] - wave["cx"].mean())) != 0)
        assert crossings >= 4
    with pytest.raises(ValueError, match="unknown motion"):
        track("Dance")


def test_plan_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_classes"):
        plan_videos(SyntheticSpec(num_classes=12), Layout())
    with pytest.raises(ValueError, match="frames"):
        plan_videos(SyntheticSpec(frames=2), Layout())


def test_cli_refuses_a_non_empty_folder(tmp_path, capsys):
    import importlib.util

    from tests.conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("make_synthetic", REPO_ROOT / "tools" / "make_synthetic.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool
    spec.loader.exec_module(tool)
    (tmp_path / "keep.txt").write_text("x")
    assert tool.main(["--out", str(tmp_path), "--num-classes", "1", "--videos-per-class", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    out = tmp_path / "new"
    argv = [
        "--out",
        str(out),
        "--num-classes",
        "2",
        "--videos-per-class",
        "1",
        "--frames",
        "8",
        "--workers",
        "1",
    ]
    assert tool.main(argv) == 0
    assert len(parse_video_list(out / "total_unlabel.csv", num_classes=2)) == 4
    assert "synthetic set written" in capsys.readouterr().out


def test_class_cue_gives_each_class_its_own_object_colours():
    spec = SyntheticSpec(seed=3, num_classes=5, frames=8, width=96, height=72, procedural=True, class_cue=1.0)
    plain = SyntheticSpec(seed=3, num_classes=5, frames=8, width=96, height=72, procedural=True)

    def job(label, i):
        return VideoJob("labeled", f"{i}.mp4", label, (3, 1, i), 8, False)

    # the cue changes the object only: without it the same job renders differently from with it
    assert not np.array_equal(render_video(job(0, 1), spec), render_video(job(0, 1), plain))
    assert np.array_equal(render_video(job(0, 1), spec), render_video(job(0, 1), spec))
    with pytest.raises(ValueError, match="class_cue"):
        make_synthetic_dataset("/nonexistent", SyntheticSpec(class_cue=1.5))


def test_extra_motions_of_the_pretraining_corpus_are_their_own():
    W, H, n = 128, 96, 32
    tracks = {m: motion_track(m, n, np.random.default_rng(3), W, H) for m in EXTRA_MOTIONS}
    assert len(set(EXTRA_MOTIONS) & set(CLASS_NAMES)) == 0 and len(MOTIONS) == 23
    assert np.ptp(tracks["Spin"]["angle"]) >= 700  # two full turns
    assert tracks["Grow"]["sx"][-1] > 1.5 * tracks["Grow"]["sx"][0]
    assert tracks["Shrink"]["sx"][-1] < 0.6 * tracks["Shrink"]["sx"][0]
    assert tracks["Fall"]["cy"][-1] - tracks["Fall"]["cy"][0] > 0.3 * H
    assert tracks["Rise"]["cy"][0] - tracks["Rise"]["cy"][-1] > 0.3 * H
    circle = tracks["Circle"]
    assert np.ptp(circle["cx"]) > 0.25 * W and np.ptp(circle["cy"]) > 0.25 * H
    # no two motions share a track
    flat = {m: np.concatenate([t[k] for k in ("cx", "cy", "angle", "sx", "sy")]) for m, t in tracks.items()}
    names = list(flat)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.allclose(flat[a], flat[b]), (a, b)


def test_per_source_counts_and_custom_motions(tmp_path):
    spec = SyntheticSpec(
        seed=2, videos_per_class=2, frames=8, width=64, height=48, procedural=True,
        per_source=(("test", 3), ("dark", 0), ("arid", 0)), motions=("Spin", "Drink"),
    )  # fmt: skip
    summary = make_synthetic_dataset(tmp_path, spec, Layout())
    assert summary.videos == {"labeled": 4, "dry": 4, "dark": 0, "arid": 0, "test": 6}
    meta = json.loads((tmp_path / "synthetic.json").read_text())
    assert meta["class_names"] == ["Spin", "Drink"]
    labeled = (tmp_path / "train_label.csv").read_text().splitlines()
    assert len(labeled) == 4 and all(line.startswith(("Spin_", "Drink_")) for line in labeled)
    assert (tmp_path / "total_unlabel.csv").read_text() == ""
    with pytest.raises(ValueError, match="motions must be distinct names"):
        plan_videos(SyntheticSpec(motions=("Spin", "Dance")), Layout())
    with pytest.raises(ValueError, match="per_source"):
        plan_videos(SyntheticSpec(per_source=(("ufo", 1),)), Layout())
