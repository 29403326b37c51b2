"""Using a trained model: the Recognizer API against the tester's PKL, and nightcrawler-predict on a folder with a
bad file (JSON, CSV, strict mode, several checkpoints fused)."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nightcrawler.config import assert_and_infer_cfg, load_config
from nightcrawler.data.check import BadVideosError
from nightcrawler.data.splits import CLASS_NAMES
from nightcrawler.data.synthetic import SyntheticSpec, make_synthetic_dataset
from nightcrawler.engine import test as tester
from nightcrawler.inference import Recognizer, probabilities_from_scores
from nightcrawler.inference.cli import main as cli_main
from nightcrawler.models import build_model
from nightcrawler.models.checkpoint import CheckpointError
from nightcrawler.utils.errors import EXIT_CHECKPOINT, EXIT_CONFIG, EXIT_DATA, EXIT_OK

REPO = Path(__file__).resolve().parents[2]
FRAMES, CROP = 4, 32
ARID = "ARID_v1.5/clips_v1.5"  # where the synthetic set puts its ARID videos (DATA.ROOT_ARID)


def opts_for(model: str, data_root: Path, out: Path) -> list:
    return [
        "NUM_GPUS", 0,
        "OUTPUT_DIR", str(out),
        "DATA.PATH_PREFIX", str(data_root),
        "DATA.NUM_FRAMES", FRAMES,
        "DATA.TRAIN_CROP_SIZE", CROP,
        "DATA.TEST_CROP_SIZE", CROP,
        "DATA_LOADER.NUM_WORKERS", 0,
        "MODEL.NUM_CLASSES", len(CLASS_NAMES),
        "TEST.BATCH_SIZE", 8,
        "TEST.NUM_ENSEMBLE_VIEWS", 2,
        "TEST.NUM_SPATIAL_CROPS", 3,
        "TEST.DATA_SELECT", "arid",
        *(["UNIFORMER.PRETRAIN_NAME", "None"] if model == "uniformer" else []),
    ]  # fmt: skip


def predict_main(argv: list) -> int:
    return cli_main([str(a) for a in argv])


def model_cfg(model: str) -> Path:
    return REPO / "configs" / "models" / f"{model}_tiny.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Short 64x48 videos of the 11 UG2 classes in the original layout (one per class and source)."""
    root = tmp_path_factory.mktemp("ug2")
    spec = SyntheticSpec(
        seed=5, num_classes=len(CLASS_NAMES), videos_per_class=1, frames=16, width=64, height=48
    )
    make_synthetic_dataset(root, spec)
    return root


def save_weights(model: str, data_root: Path, folder: Path, seed: int) -> Path:
    cfg = assert_and_infer_cfg(load_config(str(model_cfg(model)), opts_for(model, data_root, folder)))
    torch.manual_seed(seed)
    path = folder / f"{model}_{seed}.pyth"
    torch.save({"model_state": build_model(cfg).state_dict(), "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def weights(data_root, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    return {
        "uniformer": save_weights("uniformer", data_root, folder, 11),
        "uniformer_b": save_weights("uniformer", data_root, folder, 12),
        "mvit": save_weights("mvit", data_root, folder, 13),
    }


@pytest.fixture()
def video_folder(data_root, tmp_path) -> Path:
    """Four real videos (one in a subfolder), a garbage .mp4, an empty .avi and a text file (not a video)."""
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    arid = sorted((data_root / ARID).rglob("*.mp4"))
    for i, src in enumerate(arid[:4]):
        shutil.copy(src, (folder / "sub" if i == 3 else folder) / f"clip{i}.mp4")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
    (folder / "empty.avi").write_bytes(b"")
    (folder / "notes.txt").write_text("not a video\n")
    return folder


@pytest.mark.parametrize("model", ["uniformer", "mvit"])
def test_recognizer_scores_equal_the_testers_pkl(model, data_root, weights, tmp_path):
    """Same videos, same 2x3 gamma-0.25 settings: the API's scores are the tester's PKL rows."""
    torch.set_num_threads(1)
    out = tmp_path / "out"
    opts = opts_for(model, data_root, out)
    cfg = assert_and_infer_cfg(
        load_config(str(model_cfg(model)), [*opts, "TEST.CHECKPOINT_FILE_PATH", str(weights[model])])
    )
    [result] = tester.test(cfg)
    with open(result.pkl_path, "rb") as f:
        pkl = pickle.load(f)

    r = Recognizer.from_config(model_cfg(model), weights[model], device="cpu", opts=opts, topk=3)
    assert r.clips.views == 2 and r.clips.crops == 3 and r.clips.enhancement.spec == "gamma:value=0.25"
    assert r.class_names == list(CLASS_NAMES) and not r.model.training
    paths = [str(data_root / ARID / name) for name in pkl["video_names"]]
    predictions = r.predict_many(paths, batch_size=2, progress=False)
    scores = np.stack([p.scores for p in predictions])
    np.testing.assert_allclose(scores, pkl["video_preds"], rtol=1e-5, atol=1e-6)
    expected = probabilities_from_scores(pkl["video_preds"], r.outputs, "sum", 6)
    np.testing.assert_allclose(np.stack([p.probs for p in predictions]), expected, rtol=1e-5, atol=1e-6)
    for p, row in zip(predictions, expected):
        assert p.ok and p.video in paths and len(p.topk) == 3
        assert p.topk[0] == (CLASS_NAMES[int(row.argmax())], pytest.approx(float(row.max()), abs=1e-6))
        assert p.probs.sum() == pytest.approx(1.0, abs=1e-5)
    # one video alone gives the same answer as in a batch
    single = r.predict(paths[1])
    np.testing.assert_allclose(single.scores, predictions[1].scores, rtol=1e-5, atol=1e-6)


def test_probabilities_from_scores():
    logits = np.array([[2.0, 0.0, -2.0], [0.0, 0.0, 0.0]], np.float32)
    summed = 3 * logits  # three clips' logits summed (the original's aggregation)
    probs = probabilities_from_scores(summed, "logits", "sum", 3)
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    softmaxes = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]) * 3  # MViT: three eval softmaxes summed
    np.testing.assert_allclose(
        probabilities_from_scores(softmaxes, "probabilities", "sum", 3), softmaxes / 3, rtol=1e-6
    )
    with pytest.raises(ValueError, match="outputs"):
        probabilities_from_scores(summed, "scores", "sum", 3)


def test_predict_raises_naming_an_unreadable_video(data_root, weights, tmp_path):
    r = Recognizer.from_config(
        model_cfg("uniformer"), weights["uniformer"], opts=opts_for("uniformer", data_root, tmp_path)
    )
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(BadVideosError, match="bad.mp4"):
        r.predict(bad)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Recognizer.from_config(model_cfg("uniformer"), tmp_path / "none.pyth")


def cli_args(data_root: Path, tmp_path: Path, checkpoint: Path, *extra) -> list[str]:
    sets = []
    for key, value in zip(*[iter(opts_for("uniformer", data_root, tmp_path / "cli_out"))] * 2):
        sets += ["--set", key, str(value)]
    return ["--cfg", str(model_cfg("uniformer")), "--checkpoint", str(checkpoint), *sets, *map(str, extra)]


def test_cli_writes_json_and_csv_and_names_the_bad_files(data_root, weights, video_folder, tmp_path, capsys):
    torch.set_num_threads(1)
    out_json, out_csv = tmp_path / "pred.json", tmp_path / "pred.csv"
    args = cli_args(data_root, tmp_path, weights["uniformer"], video_folder, "--topk", 2, "--quiet")
    assert predict_main([*args, "--json", out_json]) == EXIT_DATA  # some files unreadable: code 3
    err = capsys.readouterr().err
    assert (
        "4 of 6 videos classified" in err
        and "broken.mp4" in err
        and "empty.avi" in err
        and "Traceback" not in err
    )
    rows = json.loads(out_json.read_text())
    assert [Path(r["video"]).name for r in rows] == [
        "broken.mp4", "clip0.mp4", "clip1.mp4", "clip2.mp4", "empty.avi", "clip3.mp4"
    ]  # fmt: skip
    by_name = {Path(r["video"]).name: r for r in rows}
    assert by_name["empty.avi"]["error"].startswith("empty") and by_name["empty.avi"]["probs"] is None
    assert by_name["broken.mp4"]["error"] and by_name["broken.mp4"]["topk"] == []
    good = [r for r in rows if r["error"] is None]
    assert len(good) == 4
    for r in good:
        assert len(r["topk"]) == 2 and {t["class"] for t in r["topk"]} <= set(CLASS_NAMES)
        assert len(r["probs"]) == len(CLASS_NAMES) and sum(r["probs"]) == pytest.approx(1.0, abs=1e-4)
        assert r["topk"][0]["prob"] == pytest.approx(max(r["probs"]), abs=1e-6)

    # the same run through the API agrees with the JSON
    api = Recognizer.from_config(
        model_cfg("uniformer"), weights["uniformer"], opts=opts_for("uniformer", data_root, tmp_path / "api")
    ).predict(video_folder / "clip0.mp4")
    np.testing.assert_allclose(by_name["clip0.mp4"]["probs"], api.probs, atol=2e-6)

    assert predict_main([*args, "--csv", out_csv]) == EXIT_DATA
    with open(out_csv, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["video", "class", "prob", "error", *CLASS_NAMES]
    by_name_csv = {Path(r["video"]).name: r for r in table}
    assert by_name_csv["clip0.mp4"]["class"] == by_name["clip0.mp4"]["topk"][0]["class"]
    assert float(by_name_csv["clip0.mp4"]["prob"]) == pytest.approx(
        by_name["clip0.mp4"]["topk"][0]["prob"], abs=1e-6
    )
    assert by_name_csv["broken.mp4"]["class"] == "" and by_name_csv["broken.mp4"]["error"]


def test_cli_every_video_readable_prints_topk_and_exits_0(data_root, weights, video_folder, tmp_path, capsys):
    args = cli_args(
        data_root, tmp_path, weights["uniformer"], video_folder / "clip0.mp4", video_folder / "sub"
    )
    assert predict_main([*args, "--topk", 3, "--views", 1, "--crops", 1, "--enhance", "none"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert (
        len(out) == 2 and out[0].startswith(str(video_folder / "clip0.mp4") + ": ") and out[0].count(",") == 2
    )


def test_cli_strict_stops_and_writes_nothing(data_root, weights, video_folder, tmp_path, capsys):
    out_json = tmp_path / "pred.json"
    args = cli_args(data_root, tmp_path, weights["uniformer"], video_folder, "--strict", "--json", out_json)
    assert predict_main(args) == EXIT_DATA
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "empty.avi" in err and "Traceback" not in err
    assert not out_json.exists()


def test_cli_fuses_several_checkpoints_by_averaging_probabilities(data_root, weights, video_folder, tmp_path):
    torch.set_num_threads(1)
    clips = [video_folder / "clip0.mp4", video_folder / "clip1.mp4"]
    single = []
    for name in ("uniformer", "uniformer_b"):
        out = tmp_path / f"{name}.json"
        assert (
            predict_main([*cli_args(data_root, tmp_path, weights[name], *clips), "--json", out, "--quiet"])
            == 0
        )
        single.append(json.loads(out.read_text()))
    fused_out = tmp_path / "fused.json"
    args = cli_args(data_root, tmp_path, weights["uniformer"], *clips, "--checkpoint", weights["uniformer_b"])
    assert predict_main([*args, "--json", fused_out, "--quiet"]) == 0
    fused = json.loads(fused_out.read_text())
    for f, a, b in zip(fused, *single):
        np.testing.assert_allclose(f["probs"], (np.array(a["probs"]) + np.array(b["probs"])) / 2, atol=2e-6)


def test_cli_user_errors(data_root, weights, tmp_path, capsys):
    empty = tmp_path / "no_videos"
    empty.mkdir()
    assert predict_main(cli_args(data_root, tmp_path, weights["uniformer"], empty)) == EXIT_CONFIG
    assert "no video files" in capsys.readouterr().err
    video = sorted((data_root / ARID).rglob("*.mp4"))[0]
    assert predict_main(cli_args(data_root, tmp_path, tmp_path / "missing.pyth", video)) == EXIT_CHECKPOINT
    assert "missing.pyth" in capsys.readouterr().err
    assert predict_main(cli_args(data_root, tmp_path, weights["mvit"], video)) == EXIT_CHECKPOINT
    err = capsys.readouterr().err
    assert "mvit_13.pyth" in err and "MViT" in err and "Traceback" not in err
