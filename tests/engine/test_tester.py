"""The tester end to end on generated videos with a tiny UniFormer: PKL layout and order, the one-decode 3x3 path
against 9 separately computed clips, TTA settings from one pass against separate runs, 2-process gloo against 1
process, checkpoint priority, skipped videos, chunked forwards."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nightcrawler.config import assert_and_infer_cfg, load_config
from nightcrawler.data import open_video
from nightcrawler.data.sampling import uniform_indices
from nightcrawler.data.synthetic import SyntheticSpec, make_synthetic_dataset
from nightcrawler.data.transforms import test_views
from nightcrawler.engine import scoring
from nightcrawler.engine import test as tester
from nightcrawler.engine.launch import launch_job
from nightcrawler.models import build_model
from nightcrawler.models.checkpoint import CheckpointError

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 3
FRAMES, CROP = 4, 32


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """30 short 64x48 videos of 3 classes in the original layout (6 per source), plus a 5-row ARID list."""
    root = tmp_path_factory.mktemp("ug2")
    make_synthetic_dataset(
        root,
        SyntheticSpec(seed=3, num_classes=NUM_CLASSES, videos_per_class=2, frames=20, width=64, height=48),
    )
    rows = (root / "arid.csv").read_text().splitlines()
    (root / "arid5.csv").write_text("\n".join(rows[:5]) + "\n")
    return root


def make_cfg(data_root: Path, out: Path, *opts, model: str = "uniformer") -> object:
    cfg = load_config(
        str(REPO / f"configs/models/{model}_tiny.yaml"),
        [
            "NUM_GPUS", 0,
            "OUTPUT_DIR", str(out),
            "DATA.PATH_PREFIX", str(data_root),
            "DATA.PATH_LABEL_SEPARATOR", ",",
            "DATA.NUM_FRAMES", FRAMES,
            "DATA.TRAIN_CROP_SIZE", CROP,
            "DATA.TEST_CROP_SIZE", CROP,
            "DATA_LOADER.NUM_WORKERS", 0,
            "MODEL.NUM_CLASSES", NUM_CLASSES,
            "UNIFORMER.PRETRAIN_NAME", "None",
            "TEST.BATCH_SIZE", 8,
            "TEST.NUM_ENSEMBLE_VIEWS", 1,
            "TEST.NUM_SPATIAL_CROPS", 1,
            "TEST.DATA_SELECT", "arid",
            *opts,
        ],
    )  # fmt: skip
    return assert_and_infer_cfg(cfg)


@pytest.fixture(scope="module")
def weights(data_root, tmp_path_factory) -> Path:
    """A checkpoint of a randomly initialised tiny UniFormer (seeded), in the .pyth layout."""
    cfg = make_cfg(data_root, tmp_path_factory.mktemp("w"))
    torch.manual_seed(11)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "weights.pyth"
    torch.save({"model_state": model.state_dict(), "epoch": 0}, path)
    return path


def read_pkl(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def csv_rows(path: Path) -> list[tuple[str, int]]:
    return [(line.split(",")[0], int(line.split(",")[1])) for line in path.read_text().splitlines() if line]


def test_pkl_layout_names_and_order_on_the_unlabelled_dark_split(data_root, weights, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    cfg = make_cfg(
        data_root, out,
        "TEST.DATA_SELECT", "total_unlabel",
        "TEST.CHECKPOINT_FILE_PATH", str(weights),
        "TEST.SAVE_RESULTS_PATH", "res.pkl",
    )  # fmt: skip
    [result] = tester.test(cfg)
    path = out / f"total_unlabelx{FRAMES}x{CROP}x1x1.pkl"
    assert result.pkl_path == path
    data = read_pkl(path)
    assert sorted(data) == ["video_labels", "video_names", "video_preds"]
    rows = csv_rows(data_root / "total_unlabel.csv")
    # dark-train videos first, then ARID
    assert len(rows) == 12 and rows[0][0] == "0.mp4" and rows[-1][0].startswith("Pick/")
    assert data["video_names"] == [name for name, _ in rows]
    assert data["video_preds"].dtype == np.float32 and data["video_preds"].shape == (12, NUM_CLASSES)
    assert data["video_labels"].dtype == np.int64 and (data["video_labels"] == -1).all()
    assert np.isfinite(data["video_preds"]).all() and np.unique(data["video_preds"], axis=0).shape[0] == 12
    preds, labels = read_pkl(out / "res.pkl")  # TEST.SAVE_RESULTS_PATH, relative to OUTPUT_DIR
    np.testing.assert_array_equal(preds, data["video_preds"])
    np.testing.assert_array_equal(labels, data["video_labels"])
    # no labels: no metrics, no figure; nothing but finished files in OUTPUT_DIR
    assert sorted(p.name for p in out.iterdir()) == sorted(["res.pkl", path.name])


def test_3x3_one_decode_equals_nine_separate_clips_summed(data_root, weights, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    cfg = make_cfg(
        data_root, out,
        "TEST.NUM_ENSEMBLE_VIEWS", 3,
        "TEST.NUM_SPATIAL_CROPS", 3,
        "TEST.MAX_VIEWS_PER_FORWARD", 4,
        "TEST.CHECKPOINT_FILE_PATH", str(weights),
    )  # fmt: skip
    [result] = tester.test(cfg)
    data = read_pkl(out / f"aridx{FRAMES}x{CROP}x3x3.pkl")

    # The original's way: every clip decoded on its own, gamma 0.25, one forward per clip, outputs summed.
    model = tester.build_test_model(cfg)
    rows = csv_rows(data_root / "arid.csv")
    expected = np.zeros((len(rows), NUM_CLASSES), np.float32)
    with torch.inference_mode():
        for v, (name, _) in enumerate(rows):
            for clip in range(9):
                view, crop = divmod(clip, 3)
                with open_video(data_root / "ARID_v1.5/clips_v1.5" / name) as reader:
                    frames = reader.frames_at(
                        uniform_indices(reader.num_frames, FRAMES, view=view, num_views=3)
                    )
                x = test_views(frames, CROP, 3, gamma=0.25)[crop : crop + 1]
                expected[v] += model(x)[0].numpy()
    np.testing.assert_allclose(data["video_preds"], expected, rtol=1e-5, atol=1e-5)
    assert data["video_names"] == [n for n, _ in rows]
    np.testing.assert_array_equal(data["video_labels"], [y for _, y in rows])

    # labels present: metrics JSON and confusion PNG beside the PKL, consistent with the PKL
    metrics = json.loads((out / f"aridx{FRAMES}x{CROP}x3x3_metrics.json").read_text())
    top1 = 100.0 * np.mean(expected.argmax(1) == np.array([y for _, y in rows]))
    assert metrics["top1_acc"] == pytest.approx(top1, abs=1e-3) and metrics["top5_acc"] == 100.0
    assert metrics == result.metrics and sum(map(sum, metrics["confusion_matrix"])) == 6
    assert (out / f"aridx{FRAMES}x{CROP}x3x3_confusion.png").read_bytes()[:4] == b"\x89PNG"


class CountingOpen:
    """``open_video`` that counts how often each file is opened."""

    def __init__(self):
        self.opens: dict[str, int] = {}

    def __call__(self, path, backend="auto", threads=1):
        self.opens[str(path)] = self.opens.get(str(path), 0) + 1
        return open_video(path, backend, threads)


def test_several_tta_settings_from_one_pass_equal_separate_runs(data_root, weights, tmp_path, caplog):
    torch.set_num_threads(1)
    extra = ["1x3", "3x1", "1x1", "1x1@g0.45"]
    counting = CountingOpen()
    cfg = make_cfg(
        data_root, tmp_path / "together",
        "TEST.NUM_ENSEMBLE_VIEWS", 3,
        "TEST.NUM_SPATIAL_CROPS", 3,
        "TEST.EXTRA_SETTINGS", extra,
        "TEST.CHECKPOINT_FILE_PATH", str(weights),
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="nightcrawler.engine.test"):
        results = tester.test(cfg, open_fn=counting)
    assert "in 1 decoding pass(es)" in caplog.text
    # every video opened once for all settings
    assert len(counting.opens) == 6 and set(counting.opens.values()) == {1}
    labels = ["3x3@g0.25", "1x3@g0.25", "3x1@g0.25", "1x1@g0.25", "1x1@g0.45"]
    assert [r.setting.label() for r in results] == labels
    names = [r.pkl_path.name for r in results]
    assert names == [f"aridx{FRAMES}x{CROP}x{s}.pkl" for s in ("3x3", "1x3", "3x1", "1x1", "1x1_g0.45")]

    for r, views, crops, gamma in [
        (results[1], 1, 3, 0.25),
        (results[2], 3, 1, 0.25),
        (results[3], 1, 1, 0.25),
        (results[4], 1, 1, 0.45),
    ]:
        alone = make_cfg(
            data_root, tmp_path / f"alone_{views}x{crops}_{gamma}",
            "TEST.NUM_ENSEMBLE_VIEWS", views,
            "TEST.NUM_SPATIAL_CROPS", crops,
            "TEST.GAMMA", gamma,
            "TEST.CHECKPOINT_FILE_PATH", str(weights),
        )  # fmt: skip
        [single] = tester.test(alone)
        together, separate = read_pkl(r.pkl_path), read_pkl(single.pkl_path)
        np.testing.assert_allclose(together["video_preds"], separate["video_preds"], rtol=1e-5, atol=1e-5)
        assert together["video_names"] == separate["video_names"]
        np.testing.assert_array_equal(together["video_labels"], separate["video_labels"])
    # settings differ from each other (the subsets are not all the same clips)
    assert not np.allclose(results[3].video_preds, results[4].video_preds, atol=1e-4)
    assert not np.allclose(results[1].video_preds, results[2].video_preds, atol=1e-4)


def test_frame_controls_write_their_own_pkls_beside_the_normal_ones(data_root, weights, tmp_path):
    """TEST.FRAME_CONTROL: every PKL of the run gets the control's suffix; the normal PKLs stay as they were."""
    torch.set_num_threads(1)
    common = (
        "DATA.CSV_ARID", "arid5.csv",
        "TEST.EXTRA_SETTINGS", ["1x1@gnone"],
        "TEST.CHECKPOINT_FILE_PATH", str(weights),
    )  # fmt: skip
    plain = tester.test(make_cfg(data_root, tmp_path, *common))
    normal = read_pkl(plain[0].pkl_path)
    for control, suffix in (("shuffle", "_shuffle"), ("one_frame", "_oneframe")):
        results = tester.test(make_cfg(data_root, tmp_path, *common, "TEST.FRAME_CONTROL", control))
        names = [r.pkl_path.name for r in results]
        assert names == [f"aridx{FRAMES}x{CROP}x1x1{s}{suffix}.pkl" for s in ("", "_gnone")]
        assert read_pkl(results[0].pkl_path)["video_names"] == normal["video_names"]
        assert not np.allclose(results[0].video_preds, plain[0].video_preds, atol=1e-4)
    np.testing.assert_array_equal(read_pkl(plain[0].pkl_path)["video_preds"], normal["video_preds"])


def test_two_gloo_processes_write_the_same_pkl_as_one(data_root, weights, tmp_path):
    torch.set_num_threads(1)
    common = (
        "DATA.CSV_ARID", "arid5.csv",  # 5 videos: shards of 2 and 3, nothing to pad
        "TEST.NUM_SPATIAL_CROPS", 3,
        "TEST.BATCH_SIZE", 4,
        "TEST.CHECKPOINT_FILE_PATH", str(weights),
    )  # fmt: skip
    one = make_cfg(data_root, tmp_path / "one", *common)
    [single] = tester.test(one)
    two = make_cfg(data_root, tmp_path / "two", "NUM_CPU_PROCESSES", 2, *common)
    launch_job(two, None, tester.test)
    a, b = read_pkl(single.pkl_path), read_pkl(tmp_path / "two" / single.pkl_path.name)
    assert len(b["video_names"]) == 5 and b["video_names"] == a["video_names"]
    np.testing.assert_array_equal(b["video_labels"], a["video_labels"])
    np.testing.assert_allclose(b["video_preds"], a["video_preds"], rtol=1e-5, atol=1e-5)
    metrics_name = f"aridx{FRAMES}x{CROP}x1x3_metrics.json"
    m1 = json.loads((tmp_path / "one" / metrics_name).read_text())
    m2 = json.loads((tmp_path / "two" / metrics_name).read_text())
    assert m1["confusion_matrix"] == m2["confusion_matrix"] and m2["num_labelled"] == 5


def test_mvit_pkl_sums_eval_softmax_outputs(data_root, tmp_path):
    """MViT's eval head applies softmax, and the original summed those probabilities: rows sum to V x C."""
    torch.set_num_threads(1)
    cfg = make_cfg(
        data_root, tmp_path, "TEST.NUM_SPATIAL_CROPS", 3, "DATA.CSV_ARID", "arid5.csv", model="mvit"
    )
    [result] = tester.test(cfg)  # no checkpoint anywhere: random weights, with a warning
    np.testing.assert_allclose(result.video_preds.sum(1), 3.0, rtol=1e-5)
    assert (result.video_preds > 0).all() and result.pkl_path.is_file()


def test_checkpoint_priority(tmp_path, data_root):
    out = tmp_path / "out"
    cfg = make_cfg(data_root, out)
    assert tester.resolve_test_checkpoint(cfg) == (None, "none")
    train_ckpt = tmp_path / "prev_best.pyth"
    train_ckpt.write_bytes(b"x")
    cfg.TRAIN.CHECKPOINT_FILE_PATH = str(train_ckpt)
    assert tester.resolve_test_checkpoint(cfg) == (train_ckpt, "TRAIN.CHECKPOINT_FILE_PATH")
    (out / "checkpoints").mkdir(parents=True)
    for name in ("checkpoint_epoch_00002.pyth", "checkpoint_epoch_00010.pyth"):
        (out / "checkpoints" / name).write_bytes(b"x")
    assert tester.resolve_test_checkpoint(cfg)[0] == out / "checkpoints" / "checkpoint_epoch_00010.pyth"
    (out / "checkpoints" / "checkpoint_latest.pyth").write_bytes(b"x")
    assert tester.resolve_test_checkpoint(cfg)[0] == out / "checkpoints" / "checkpoint_latest.pyth"
    cfg.TEST.TEST_BEST = True  # best.pyth missing: falls through to the last checkpoint
    assert tester.resolve_test_checkpoint(cfg)[0] == out / "checkpoints" / "checkpoint_latest.pyth"
    (out / "best.pyth").write_bytes(b"x")
    assert tester.resolve_test_checkpoint(cfg) == (out / "best.pyth", "TEST.TEST_BEST")
    explicit = tmp_path / "chosen.pyth"
    explicit.write_bytes(b"x")
    cfg.TEST.CHECKPOINT_FILE_PATH = str(explicit)
    assert tester.resolve_test_checkpoint(cfg) == (explicit, "TEST.CHECKPOINT_FILE_PATH")
    cfg.TEST.CHECKPOINT_FILE_PATH = str(tmp_path / "missing.pyth")
    with pytest.raises(FileNotFoundError, match="TEST.CHECKPOINT_FILE_PATH"):
        tester.resolve_test_checkpoint(cfg)


def test_tested_weights_are_the_checkpoint_and_mismatches_fail(data_root, weights, tmp_path):
    cfg = make_cfg(data_root, tmp_path / "a", "TEST.CHECKPOINT_FILE_PATH", str(weights))
    model = tester.build_test_model(cfg)
    saved = torch.load(weights)["model_state"]
    assert not model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    wrong = make_cfg(
        data_root, tmp_path / "b", "TEST.CHECKPOINT_FILE_PATH", str(weights), "UNIFORMER.DEPTH", [1, 1, 1, 1]
    )
    with pytest.raises(RuntimeError, match="does not match the model"):
        tester.build_test_model(wrong)
    # a test with another class count would run a fresh, random classifier: refused, naming the file
    other_count = make_cfg(
        data_root, tmp_path / "c", "TEST.CHECKPOINT_FILE_PATH", str(weights), "MODEL.NUM_CLASSES", 5
    )
    with pytest.raises(CheckpointError, match=rf"{weights.name}: its classifier .* model's 5 classes"):
        tester.build_test_model(other_count)


def test_undecodable_videos_are_skipped_and_listed(data_root, weights, tmp_path):
    torch.set_num_threads(1)
    root = tmp_path / "data"
    (root / "ARID_v1.5/clips_v1.5/Drink").mkdir(parents=True)
    rows = csv_rows(data_root / "arid.csv")[:3]
    for name, _ in rows:
        (root / "ARID_v1.5/clips_v1.5" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "ARID_v1.5/clips_v1.5" / name).write_bytes(
            (data_root / "ARID_v1.5/clips_v1.5" / name).read_bytes()
        )
    (root / "ARID_v1.5/clips_v1.5/Drink/broken.mp4").write_bytes(b"not a video at all")
    lines = [f"{n},{y}" for n, y in rows[:1]] + ["Drink/broken.mp4,0"] + [f"{n},{y}" for n, y in rows[1:]]
    (root / "arid.csv").write_text("\n".join(lines) + "\n")
    base = ("TEST.CHECKPOINT_FILE_PATH", str(weights), "DATA.DECODE_RETRIES", 1)
    with pytest.raises(Exception, match="broken.mp4"):
        tester.test(make_cfg(root, tmp_path / "strict", *base))
    out = tmp_path / "skip"
    [result] = tester.test(make_cfg(root, out, *base, "TEST.SKIP_BAD_VIDEOS", True))
    assert result.video_names == [n for n, _ in rows]
    assert (out / f"aridx{FRAMES}x{CROP}x1x1_skipped.txt").read_text() == "Drink/broken.mp4\n"
    assert read_pkl(result.pkl_path)["video_preds"].shape == (3, NUM_CLASSES)


def test_forward_chunks_are_bounded_and_keep_clip_order():
    sizes = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            sizes.append(x.shape[0])
            return x.flatten(1)[:, :2] * 2

    assert tester.forward_plan(9, 8, 9) == (1, 8)
    assert tester.forward_plan(9, 64, 9) == (7, 9)
    assert tester.forward_plan(30, 64, 9) == (7, 9)
    assert tester.forward_plan(1, 64, 9) == (64, 1)
    assert tester.forward_plan(9, 64, 0) == (7, 9)
    x = torch.randn(2, 9, 3, 1, 1, 1)
    y = scoring.forward_clips(Recorder(), x, chunk=4, device=torch.device("cpu"))
    assert sizes == [8, 8, 2]
    torch.testing.assert_close(y, x.flatten(2)[:, :, :2] * 2)


def test_training_split_is_rejected(data_root, tmp_path):
    with pytest.raises(ValueError, match="training split"):
        tester.test(make_cfg(data_root, tmp_path, "TEST.DATA_SELECT", "train_label"))


def test_also_splits_equal_separate_runs(data_root, weights, tmp_path):
    torch.set_num_threads(1)
    both = make_cfg(
        data_root, tmp_path / "both",
        "TEST.CHECKPOINT_FILE_PATH", str(weights),
        "TEST.DATA_SELECT", "dark_unlabel",
        "TEST.ALSO_SPLITS", ["test"],
    )  # fmt: skip
    results = tester.test(both)
    assert [r.pkl_path.name for r in results] == [
        f"dark_unlabelx{FRAMES}x{CROP}x1x1.pkl",
        f"testx{FRAMES}x{CROP}x1x1.pkl",
    ]
    for split in ("dark_unlabel", "test"):
        alone = make_cfg(
            data_root, tmp_path / split, "TEST.CHECKPOINT_FILE_PATH", str(weights), "TEST.DATA_SELECT", split
        )
        tester.test(alone)
        name = f"{split}x{FRAMES}x{CROP}x1x1.pkl"
        a, b = read_pkl(tmp_path / "both" / name), read_pkl(tmp_path / split / name)
        assert a["video_names"] == b["video_names"]
        np.testing.assert_allclose(a["video_preds"], b["video_preds"], atol=1e-6)
