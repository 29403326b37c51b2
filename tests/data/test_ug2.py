"""The UG2 dataset: split -> list/roots, items, one decode per test video, bad videos, gamma defaults."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch

from nightcrawler.config import get_cfg
from nightcrawler.data import sampling
from nightcrawler.data.csvs import VideoRow
from nightcrawler.data.decoders import VideoDecodeError, open_video
from nightcrawler.data.enhance import split_enhancement
from nightcrawler.data.splits import SPLITS, TEST_SPLITS, TRAIN_SPLITS
from nightcrawler.data.synthetic import SyntheticSpec, VideoJob, render_video, write_video
from nightcrawler.data.transforms import test_views
from nightcrawler.data.ug2 import UG2Dataset, build_dataset, split_paths
from tests.conftest import golden_dir


class FakeReader:
    """A video whose frame i is the constant image (3i + 5) mod 256; records every read."""

    def __init__(self, length: int, height: int = 24, width: int = 32, log: list | None = None):
        self.num_frames, self.height, self.width, self.fps = length, height, width, 30.0
        self.log = [] if log is None else log

    def frames_at(self, indices):
        idx = [int(i) for i in indices]
        self.log.append(idx)
        values = torch.tensor([(3 * i + 5) % 256 for i in idx], dtype=torch.uint8)
        return values.view(-1, 1, 1, 1).expand(-1, self.height, self.width, 3).contiguous()

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fake_open(videos: dict, log: list | None = None):
    """open_fn serving FakeReaders by file name; names not in ``videos`` fail like an undecodable file."""

    def open_fn(path, backend="auto", threads=1):
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        if name not in videos:
            raise VideoDecodeError(path, "corrupt test file")
        return FakeReader(*videos[name], log=log)

    return open_fn


def frame_values_transform(frames, rng):
    """Training transform for tests: no augmentation, keeps the frame values visible, (3, T, H, W)."""
    return frames.permute(3, 0, 1, 2).float()


def make_list(tmp_path, rows, root="videos", name="list.csv"):
    folder = tmp_path / root
    folder.mkdir(exist_ok=True)
    for rel, _ in rows:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"")
    csv = tmp_path / name
    csv.write_text("".join(f"{rel},{label}\n" for rel, label in rows))
    return csv, [str(folder)]


# --------------------------------------------------------------------------------------------- test items


def _golden_cases():
    path = golden_dir() / "sampling" / "test_clips_end_to_end.json"
    if not path.is_file():
        pytest.skip(f"golden data not found: {path} (set NIGHTCRAWLER_SHARED_DIR)")
    return json.loads(path.read_text())["cases"]


def test_test_items_match_the_original_dataset_clip_by_clip(tmp_path):
    """Golden: the original __getitem__ on fake videos (frame i = (3i+5) mod 256), gamma 0.25, 32 frames."""
    for case in _golden_cases():
        views, crops = case["num_ensemble_views"], case["num_spatial_crops"]
        per_video = views * crops
        by_row: dict[int, list[dict]] = {}
        for clip in case["clips"]:
            by_row.setdefault(clip["video_row"], []).append(clip)
        # the spatial size does not change a constant frame's value: use small frames with the same aspect
        videos = {
            f"{row}.mp4": (c[0]["video_length"], c[0]["input_h"] // 10, c[0]["input_w"] // 10)
            for row, c in by_row.items()
        }
        csv, roots = make_list(tmp_path, [(f"{row}.mp4", -1) for row in sorted(by_row)])
        log: list = []
        dense = case["dataset"].startswith("Ug2 (dense")
        ds = UG2Dataset(
            "test",
            csv,
            roots,
            num_classes=11,
            num_frames=case["num_frames"],
            dense=dense,
            sampling_rate=case.get("sampling_rate", 1),
            use_offset_sampling=case.get("use_offset_sampling", True),
            num_views=views,
            num_crops=crops,
            crop_size=24,
            gamma=0.25,
            open_fn=fake_open(videos, log),
        )
        for row, clips in sorted(by_row.items()):
            log.clear()
            item = ds[row]
            assert item["inputs"].shape == (per_video, 3, case["num_frames"], 24, 24)
            assert item["label"] == clips[0]["label"] and item["index"] == row and item["ok"]
            # one read of the union of every clip's frames
            assert log == [sorted({f for c in clips for f in c["frames_requested"]})]
            for clip in clips:
                w = clip["clip_index"] % per_video
                got = item["inputs"][w, 0].mean(dim=(1, 2)).numpy()
                np.testing.assert_allclose(
                    got, clip["value_per_output_frame"], atol=5e-6
                )  # golden: 6 decimals


def _write_real_video(path, frames=40, seed=3, dark=False):
    spec = SyntheticSpec(width=64, height=48, frames=frames, procedural=True)
    job = VideoJob("labeled", path.name, 2, (seed,), frames, dark)
    write_video(str(path), render_video(job, spec), 30, dark)


def test_one_decode_equals_decoding_every_clip_separately(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    _write_real_video(folder / "a.mp4")
    csv = tmp_path / "l.csv"
    csv.write_text("a.mp4,2\n")
    ds = UG2Dataset(
        "arid",
        csv,
        [str(folder)],
        num_classes=11,
        num_frames=8,
        num_views=3,
        num_crops=3,
        crop_size=32,
        gamma=0.25,
    )
    item = ds[0]
    assert item["inputs"].shape == (9, 3, 8, 32, 32) and item["name"] == "a.mp4" and item["label"] == 2
    for view in range(3):
        with open_video(folder / "a.mp4") as reader:
            idx = sampling.uniform_indices(reader.num_frames, 8, view=view, num_views=3)
            frames = reader.frames_at(idx)
        expected = test_views(frames, 32, 3, 0.25, (0.45,) * 3, (0.225,) * 3)
        for crop in range(3):
            assert torch.equal(item["inputs"][view * 3 + crop], expected[crop])


# --------------------------------------------------------------------------------------------- training


def _training_dataset(csv, roots, videos, split="train_label", log=None, open_fn=None, **kw):
    return UG2Dataset(
        split,
        csv,
        roots,
        num_classes=11,
        num_frames=8,
        train_transform=frame_values_transform,
        num_sample=2,
        open_fn=open_fn or fake_open(videos, log),
        **kw,
    )


def test_training_item_layout_sampling_and_seeding(tmp_path):
    csv, roots = make_list(tmp_path, [("a.mp4", 4), ("b.mp4", 9)])
    ds = _training_dataset(csv, roots, {"a.mp4": (100,), "b.mp4": (10,)})
    torch.manual_seed(0)
    item = ds[0]
    assert set(item) == {"inputs", "label", "index", "probs", "failed"}
    assert item["inputs"].shape == (2, 3, 8, 24, 32) and item["inputs"].dtype == torch.float32
    assert (item["label"], item["index"], item["failed"]) == (4, 0, 0)
    assert torch.equal(item["probs"], torch.zeros(11))
    # both augmented samples come from one decode: here (identity transform) they are identical
    assert torch.equal(item["inputs"][0], item["inputs"][1])
    values = item["inputs"][0, 0, :, 0, 0].long().tolist()
    frames = [((v - 5) % 256) * pow(3, -1, 256) % 256 for v in values]  # invert (3i + 5) mod 256
    for f, (lo, hi) in zip(frames, sampling.uniform_ranges(100, 8)):
        assert lo <= f <= hi
    torch.manual_seed(0)
    assert torch.equal(ds[0]["inputs"], item["inputs"])  # the item's draws follow torch's RNG
    torch.manual_seed(1)
    assert not torch.equal(ds[0]["inputs"], item["inputs"])


def test_training_gamma_is_applied_before_the_transform(tmp_path):
    csv, roots = make_list(tmp_path, [("a.mp4", 1)])
    plain = _training_dataset(csv, roots, {"a.mp4": (1,)})
    bright = _training_dataset(csv, roots, {"a.mp4": (1,)}, enhancement="gamma:value=0.25")
    assert plain[0]["inputs"].max() == 5  # frame 0 = value 5
    assert bright[0]["inputs"].max() == 95  # torchvision gamma 0.25 of 5 (spec §4 test vector)


def test_failing_training_video_is_replaced_and_counted(tmp_path, caplog):
    csv, roots = make_list(tmp_path, [("good.mp4", 3), ("bad.mp4", 5)])
    log: list = []
    ds = _training_dataset(csv, roots, {"good.mp4": (50,)}, log=log, retries=2)
    with caplog.at_level(logging.WARNING, logger="nightcrawler.data.ug2"):
        item = ds[1]
    assert item["failed"] == 1
    assert (item["index"], item["label"]) == (0, 3)  # the replacement's own index and label
    assert "bad.mp4" in caplog.text and "random other video" in caplog.text


class FlakyOpen:
    """open_fn over fake videos whose first ``failures[name]`` attempts fail, when opening the file
    (``stage="open"``) or when reading its frames (``stage="read"``); counts attempts per file name."""

    def __init__(self, videos: dict, failures: dict, stage: str = "open"):
        self.videos, self.failures, self.stage = videos, failures, stage
        self.attempts: dict[str, int] = {}

    def __call__(self, path, backend="auto", threads=1):
        name = path.rsplit("/", 1)[-1]
        self.attempts[name] = self.attempts.get(name, 0) + 1
        failing = self.attempts[name] <= self.failures.get(name, 0)
        if failing and self.stage == "open":
            raise VideoDecodeError(path, f"attempt {self.attempts[name]} failed")
        reader = FakeReader(*self.videos[name])
        if failing:  # opens, then the decoder errors mid-read (reported as a plain RuntimeError)

            def broken_read(indices):
                raise RuntimeError("decoder error")

            reader.frames_at = broken_read
        return reader


@pytest.mark.parametrize("stage", ["open", "read"])
def test_decode_retries_then_keeps_the_same_video(tmp_path, caplog, stage):
    csv, roots = make_list(tmp_path, [("good.mp4", 3), ("flaky.mp4", 5)])
    videos = {"good.mp4": (50,), "flaky.mp4": (40,)}
    flaky = FlakyOpen(videos, {"flaky.mp4": 3}, stage)  # fails 3 times, the 4th attempt works
    ds = _training_dataset(csv, roots, videos, retries=4, open_fn=flaky)
    with caplog.at_level(logging.WARNING, logger="nightcrawler.data.ug2"):
        item = ds[1]
    assert flaky.attempts == {"flaky.mp4": 4}
    assert (item["index"], item["label"], item["failed"]) == (1, 5, 0)  # the same video, not a failure
    assert caplog.text == ""


@pytest.mark.parametrize("stage", ["open", "read"])
def test_decode_retries_then_replaces_the_video(tmp_path, caplog, stage):
    csv, roots = make_list(tmp_path, [("good.mp4", 3), ("flaky.mp4", 5)])
    videos = {"good.mp4": (50,), "flaky.mp4": (40,)}
    flaky = FlakyOpen(videos, {"flaky.mp4": 4}, stage)  # fails as often as it is tried
    ds = _training_dataset(csv, roots, videos, retries=4, open_fn=flaky)
    with caplog.at_level(logging.WARNING, logger="nightcrawler.data.ug2"):
        item = ds[1]
    assert flaky.attempts == {"flaky.mp4": 4, "good.mp4": 1}  # exactly DECODE_RETRIES tries, then replaced
    assert (item["index"], item["label"], item["failed"]) == (0, 3, 1)
    assert len(caplog.records) == 1 and "flaky.mp4" in caplog.records[0].getMessage()
    assert "random other video" in caplog.text
    assert ("decoder error" if stage == "read" else "attempt 4 failed") in caplog.text  # the last error


def test_decode_retries_come_from_the_config_and_failures_are_counted_per_batch(tmp_path):
    from nightcrawler.data.loader import build_loader

    cfg = _layout(tmp_path)
    cfg.DATA.DECODE_RETRIES = 2
    cfg.DATA_LOADER.NUM_WORKERS = 0
    videos = {"Drink_001.mp4": (40,), "Jump_001.avi": (30,), "Drink_dry_001.avi": (50,)}
    flaky = FlakyOpen(videos, {"Jump_001.avi": 10**6})  # never decodes
    assert build_dataset(cfg, "train_label").retries == 2
    loader = build_loader(cfg, "train_label", batch_size=1, open_fn=flaky)
    for epoch in range(1, 3):
        batches = list(loader)
        # every video is drawn once an epoch; the broken one fails once (after 2 tries) and is replaced
        assert sum(int(b["failed"]) for b in batches) == 1
        assert flaky.attempts["Jump_001.avi"] == 2 * epoch
        failed = [b for b in batches if b["failed"]]
        assert failed[0]["index"][0].item() != 1  # the batch holds the replacement


def test_training_split_gives_up_when_every_video_fails(tmp_path):
    csv, roots = make_list(tmp_path, [("x.mp4", 3), ("y.mp4", 5)])
    ds = _training_dataset(csv, roots, {}, retries=1)
    with pytest.raises(RuntimeError, match="failed to decode"):
        ds[0]


def test_pseudo_items_carry_csv_scores(tmp_path):
    folder = tmp_path / "dark"
    folder.mkdir()
    (folder / "7.mp4").write_bytes(b"")
    probs = [0.05] * 10 + [0.5]
    csv = tmp_path / "stage1.csv"
    csv.write_text("7.mp4,10," + ",".join(map(str, probs)) + "\n")
    ds = _training_dataset(csv, [str(folder)], {"7.mp4": (40,)}, split="train_pseudo_label")
    item = ds[0]
    assert item["label"] == 10
    assert torch.allclose(item["probs"], torch.tensor(probs))


# --------------------------------------------------------------------------------------------- bad test videos


def test_undecodable_test_video_raises_naming_it(tmp_path):
    csv, roots = make_list(tmp_path, [("0.mp4", -1), ("1.mp4", -1)])
    ds = UG2Dataset(
        "test", csv, roots, num_classes=11, num_frames=4, crop_size=16, open_fn=fake_open({"0.mp4": (9,)})
    )
    assert ds[0]["ok"]
    with pytest.raises(VideoDecodeError, match="1.mp4"):
        ds[1]


def test_skip_bad_marks_the_item_instead(tmp_path):
    csv, roots = make_list(tmp_path, [("0.mp4", -1), ("1.mp4", 4)])
    ds = UG2Dataset(
        "test",
        csv,
        roots,
        num_classes=11,
        num_frames=4,
        num_views=2,
        num_crops=3,
        crop_size=16,
        skip_bad=True,
        open_fn=fake_open({"0.mp4": (9,)}),
    )
    item = ds[1]
    assert item["ok"] is False and item["name"] == "1.mp4" and item["label"] == 4
    assert item["inputs"].shape == (6, 3, 4, 16, 16) and not item["inputs"].any()


def test_real_corrupt_file_fails_through_the_real_decoder(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "junk.mp4").write_bytes(b"\x00not a video" * 100)
    csv = tmp_path / "l.csv"
    csv.write_text("junk.mp4,1\n")
    ds = UG2Dataset("val_dry", csv, [str(folder)], num_classes=11, num_frames=4, crop_size=16, retries=1)
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        ds[0]


def test_missing_test_videos_fail_at_construction(tmp_path):
    csv, roots = make_list(tmp_path, [("0.mp4", -1)])
    csv.write_text("0.mp4,-1\n5.mp4,-1\n")
    with pytest.raises(FileNotFoundError, match=r"1 of 2 videos of split test .*5\.mp4"):
        UG2Dataset("test", csv, roots, num_classes=11, open_fn=fake_open({}))
    ds = UG2Dataset("test", csv, roots, num_classes=11, num_frames=4, crop_size=16, skip_bad=True)
    assert ds[1]["ok"] is False


# --------------------------------------------------------------------------------------------- config


def _layout(tmp_path):
    """A data root with the default folders, one or two (empty) video files per source, and every list."""
    files = {
        "labeled_train/Train": ["Drink_001.mp4", "Jump_001.avi"],
        "dry_run/Validation": ["Drink_dry_001.avi"],
        "dark_train/Train": ["0.mp4", "1.mp4"],
        "ARID_v1.5/clips_v1.5": ["Wave/Wave_1_1.mp4"],
        "Test": ["0.mp4"],
    }
    for folder, names in files.items():
        for name in names:
            path = tmp_path / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    lists = {
        "train_label+val_dry.csv": "Drink_001.mp4,0\nJump_001.avi,1\nDrink_dry_001.avi,0\n",
        "val_dry.csv": "Drink_dry_001.avi,0\n",
        "arid.csv": "Wave/Wave_1_1.mp4,10\n",
        "dark_unlabel.csv": "0.mp4,-1\n1.mp4,-1\n",
        "total_unlabel.csv": "0.mp4,-1\n1.mp4,-1\nWave/Wave_1_1.mp4,-1\n",
        "test.csv": "0.mp4,-1\n",
    }
    for name, text in lists.items():
        (tmp_path / name).write_text(text)
    cfg = get_cfg()
    cfg.DATA.PATH_PREFIX = str(tmp_path)
    cfg.MODEL.NUM_CLASSES = 11
    cfg.DATA.NUM_FRAMES = 4
    cfg.DATA.TEST_CROP_SIZE = cfg.DATA.TRAIN_CROP_SIZE = 16
    cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE = [0.5, 1.0]
    cfg.DATA.TRAIN_JITTER_ASPECT_RELATIVE = [0.75, 1.3333]
    return cfg


def test_every_split_maps_to_its_list_and_roots(tmp_path):
    cfg = _layout(tmp_path)
    expected = {
        "train_label": ("train_label+val_dry.csv", ["labeled_train/Train", "dry_run/Validation"]),
        "train_unlabel": ("total_unlabel.csv", ["dark_train/Train", "ARID_v1.5/clips_v1.5"]),
        "val_dry": ("val_dry.csv", ["dry_run/Validation", "labeled_train/Train"]),
        "arid": ("arid.csv", ["ARID_v1.5/clips_v1.5", "dark_train/Train"]),
        "dark_unlabel": ("dark_unlabel.csv", ["dark_train/Train"]),
        "total_unlabel": ("total_unlabel.csv", ["dark_train/Train", "ARID_v1.5/clips_v1.5"]),
        "test": ("test.csv", ["Test"]),
    }
    for split, (csv, roots) in expected.items():
        assert split_paths(cfg, split) == (str(tmp_path / csv), [str(tmp_path / r) for r in roots])
    assert set(TRAIN_SPLITS) == {"train_label", "train_unlabel", "train_pseudo_label"}
    assert set(TEST_SPLITS) == {"val_dry", "arid", "dark_unlabel", "total_unlabel", "test"}
    assert set(SPLITS) == set(TRAIN_SPLITS) | set(TEST_SPLITS)


def test_rows_resolve_against_the_other_roots_of_their_split(tmp_path):
    cfg = _layout(tmp_path)
    train = build_dataset(cfg, "train_label")
    assert train.paths == [
        str(tmp_path / "labeled_train/Train/Drink_001.mp4"),
        str(tmp_path / "labeled_train/Train/Jump_001.avi"),
        str(tmp_path / "dry_run/Validation/Drink_dry_001.avi"),  # dry-run row of the merged list
    ]
    total = build_dataset(cfg, "total_unlabel")
    assert total.paths[2] == str(tmp_path / "ARID_v1.5/clips_v1.5/Wave/Wave_1_1.mp4")
    assert not total.training and total.num_views == cfg.TEST.NUM_ENSEMBLE_VIEWS
    # the test split never borrows dark-train's identically named N.mp4 files
    (tmp_path / "test.csv").write_text("0.mp4,-1\n1.mp4,-1\n")
    with pytest.raises(FileNotFoundError, match=r"Test.*1\.mp4"):
        build_dataset(cfg, "test")
    cfg.DATA.ROOT_FALLBACK = False
    assert build_dataset(cfg, "train_label").paths[2] == str(
        tmp_path / "labeled_train/Train/Drink_dry_001.avi"
    )


def test_missing_list_and_pseudo_list_errors(tmp_path):
    cfg = _layout(tmp_path)
    (tmp_path / "arid.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"arid.*arid\.csv.*DATA\.CSV_ARID"):
        build_dataset(cfg, "arid")
    with pytest.raises(ValueError, match="DATA.PSEUDO_CSV"):
        build_dataset(cfg, "train_pseudo_label")
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        build_dataset(cfg, "nope")


def _default(cfg, split):
    return split_enhancement(cfg, split, SPLITS[split].training).spec


def test_split_enhancement_defaults_and_explicit_choices(tmp_path):
    cfg = _layout(tmp_path)
    g = "gamma:value=0.25"
    assert {s: _default(cfg, s) for s in SPLITS} == {
        "train_label": "none",
        "train_unlabel": "none",
        "train_pseudo_label": "none",
        "val_dry": "none",
        "arid": g,
        "dark_unlabel": g,
        "total_unlabel": g,
        "test": g,
    }
    cfg.DATA.DECODING_BACKEND = "decord_GIC"  # the original's gamma decoding mode covers every test split
    assert _default(cfg, "val_dry") == g and _default(cfg, "train_label") == "none"
    cfg.DATA.TRAIN_GAMMA = 0.5
    assert _default(cfg, "train_unlabel") == _default(cfg, "train_pseudo_label") == "gamma:value=0.5"
    assert _default(cfg, "train_label") == "none"  # normal-light clips are never brightened
    cfg.ENHANCE.TRAIN_DARK = "gamma:value=0.4"  # the new key wins over its alias
    assert _default(cfg, "train_unlabel") == "gamma:value=0.4"
    cfg.ENHANCE.EVAL = "none"
    assert _default(cfg, "arid") == "none"
    assert build_dataset(cfg, "arid", enhancement=None).enhancement.spec == "none"
    assert build_dataset(cfg, "val_dry", enhancement=0.45).enhancement.spec == "gamma:value=0.45"
    assert build_dataset(cfg, "arid", enhancement="gamma:value=1").enhancement.spec == "none"
    both = build_dataset(cfg, "arid", enhancement=["none", "gamma:value=0.5"], views=2, crops=3)
    assert [e.spec for e in both.enhancements] == ["none", "gamma:value=0.5"] and both.clips_per_video == 12
    assert build_dataset(cfg, "arid").backend == "decord"


def test_dense_dataset_uses_dense_sampling(tmp_path):
    cfg = _layout(tmp_path)
    cfg.TEST.DATASET = "ug2"
    cfg.DATA.SAMPLING_RATE = 2
    cfg.DATA.USE_OFFSET_SAMPLING = True
    ds = build_dataset(cfg, "arid", views=3, crops=1)
    assert ds.dense and (ds.num_views, ds.num_crops) == (3, 1)
    assert ds.test_clip_indices(100) == [
        sampling.dense_indices(100, 4, 2, view=v, num_views=3, use_offset=True) for v in range(3)
    ]
    rng_a, rng_b = random.Random(5), random.Random(5)
    cfg.TRAIN.DATASET = "ug2"
    train = build_dataset(cfg, "train_unlabel")
    assert train.clip_indices(100, None, rng_a) == sampling.dense_indices(100, 4, 2, rng=rng_b)


def test_missing_decoder_library_is_not_a_bad_video(tmp_path):
    from nightcrawler.data.decoders import BackendUnavailableError

    def no_backend(path, backend="auto", threads=1):
        raise BackendUnavailableError("decord backend selected but not importable")

    csv, roots = make_list(tmp_path, [("a.mp4", 1), ("b.mp4", 2)])
    ds = UG2Dataset(
        "train_label", csv, roots, num_classes=11, train_transform=frame_values_transform, open_fn=no_backend
    )
    with pytest.raises(BackendUnavailableError, match="decord"):
        ds[0]


def test_frame_controls_change_the_test_clips_per_video(tmp_path):
    """TEST.FRAME_CONTROL: "shuffle" permutes every view of a video the same way (another permutation per video),
    "one_frame" repeats each view's middle frame; the item decodes the controlled frames; training splits ignore it."""
    cfg = _layout(tmp_path)
    plain = build_dataset(cfg, "arid", views=3, crops=1).test_clip_indices(100, 0)
    cfg.TEST.FRAME_CONTROL, cfg.RNG_SEED = "shuffle", 5
    ds = build_dataset(cfg, "arid", views=3, crops=1)
    views = ds.test_clip_indices(100, 0)
    order = sampling.time_permutation(4, "5:0")
    assert views == [[v[i] for i in order] for v in plain] and views != plain
    assert ds.test_clip_indices(100, 0) == views
    assert [ds.test_clip_indices(100, i)[0] for i in range(6)] != [views[0]] * 6
    cfg.TEST.FRAME_CONTROL = "one_frame"
    ds = build_dataset(cfg, "arid", views=3, crops=1, open_fn=fake_open({"Wave_1_1.mp4": (100,)}))
    assert ds.test_clip_indices(100, 0) == [[v[2]] * 4 for v in plain]
    values = ds[0]["inputs"][:, 0].mean(dim=(2, 3))  # (views, T): one frame value per view
    assert (values == values[:, :1]).all() and not (values[0] == values[1]).all()
    assert build_dataset(cfg, "train_label").frame_control == ""
    with pytest.raises(ValueError, match="training splits none"):
        UG2Dataset(
            "train_label",
            [VideoRow("x.mp4", 0)],
            [str(tmp_path)],
            num_classes=11,
            train_transform=frame_values_transform,
            frame_control="shuffle",
        )
