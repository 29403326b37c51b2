"""The stage script and the vote run end to end on PKLs our tester wrote: two tiny models (UniFormer, SlowFast;
4 frames at 32x32, seeded random weights saved as checkpoints) tested on the synthetic set, their PKLs laid out
as in a checkout (``exp_adapt_bn/<model>/``, ``exp_pseudo_stage4/<model>/``), then
``generate_pseudo_label_stage1.py`` with ``configs/pseudo/two_models.yaml`` and ``test_ensemble_vote.py`` with
``configs/ensemble/two_models.yaml`` as subprocesses."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nightcrawler.config import assert_and_infer_cfg, load_config
from nightcrawler.engine import test as tester
from nightcrawler.models import build_model
from nightcrawler.pseudo.fuse import softmax
from nightcrawler.pseudo.io import read_pseudo_csv, read_video_list
from nightcrawler.pseudo.vote import read_submission
from tests.engine.train_helpers import TINY_UNIFORMER, synthetic_root

from .conftest import run

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 11  # the pseudo / ensemble configs' class count; the synthetic set uses classes 0..2 of them
FRAMES, CROP = 4, 32
# role of configs/pseudo|ensemble/two_models.yaml -> (model config, folder, seed, model-specific overrides)
ROLES = {
    "uniformer": ("uniformer", "uniformer_tiny", 11, [*TINY_UNIFORMER, "UNIFORMER.PRETRAIN_NAME", "None"]),
    "slowfast": ("sf", "sf_tiny", 12, []),
}
UNLABELLED_PKL = f"total_unlabelx{FRAMES}x{CROP}x1x1.pkl"
TEST_PKLS = {"1x1": f"testx{FRAMES}x{CROP}x1x1.pkl", "3x3": f"testx{FRAMES}x{CROP}x3x3.pkl"}


def _cfg(model: str, data_root: Path, out: Path, extra: list, *opts):
    cfg = load_config(
        str(REPO / "configs" / "models" / f"{model}_tiny.yaml"),
        [
            "NUM_GPUS", 0,
            "OUTPUT_DIR", str(out),
            "MODEL.NUM_CLASSES", NUM_CLASSES,
            "DATA.PATH_PREFIX", str(data_root),
            "DATA.PATH_LABEL_SEPARATOR", ",",
            "DATA.DECODING_BACKEND", "pyav",
            "DATA.NUM_FRAMES", FRAMES,
            "DATA.TRAIN_CROP_SIZE", CROP,
            "DATA.TEST_CROP_SIZE", CROP,
            "DATA_LOADER.NUM_WORKERS", 0,
            "DATA_LOADER.PIN_MEMORY", False,
            "LOG_MODEL_INFO", False,
            "TEST.BATCH_SIZE", 8,
            *extra,
            *opts,
        ],
    )  # fmt: skip
    return assert_and_infer_cfg(cfg)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A checkout-like root: data/{total_unlabel,test}.csv, and per model the tester's unlabelled 1x1 PKL under
    exp_adapt_bn/<model>/ and its test 1x1 + 3x3 PKLs (one decoding pass) under exp_pseudo_stage4/<model>/."""
    data_root = synthetic_root(tmp_path_factory)
    root = tmp_path_factory.mktemp("checkout")
    (root / "data").mkdir()
    for name in ("total_unlabel.csv", "test.csv"):
        shutil.copy(data_root / name, root / "data" / name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model, folder, seed, extra in ROLES.values():
            cfg = _cfg(model, data_root, root / "weights" / folder, extra)
            torch.manual_seed(seed)
            weights = root / "weights" / folder / "weights.pyth"
            weights.parent.mkdir(parents=True)
            torch.save({"model_state": build_model(cfg).state_dict(), "epoch": 0}, weights)
            common = ("TEST.CHECKPOINT_FILE_PATH", str(weights))
            tester.test(
                _cfg(
                    model, data_root, root / "exp_adapt_bn" / folder, extra, *common,
                    "TEST.DATA_SELECT", "total_unlabel",
                    "TEST.NUM_ENSEMBLE_VIEWS", 1,
                    "TEST.NUM_SPATIAL_CROPS", 1,
                )
            )  # fmt: skip
            tester.test(
                _cfg(
                    model, data_root, root / "exp_pseudo_stage4" / folder, extra, *common,
                    "TEST.DATA_SELECT", "test",
                    "TEST.NUM_ENSEMBLE_VIEWS", 3,
                    "TEST.NUM_SPATIAL_CROPS", 3,
                    "TEST.EXTRA_SETTINGS", ["1x1"],
                )
            )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return root


def read_pkl(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def test_stage_script_on_the_testers_unlabelled_pkls(checkout, tmp_path):
    names, _ = read_video_list(checkout / "data" / "total_unlabel.csv")
    preds = {}
    for role, (_, folder, _, _) in ROLES.items():
        data = read_pkl(checkout / "exp_adapt_bn" / folder / UNLABELLED_PKL)
        assert data["video_names"] == names  # the tester writes the list's videos in list order
        preds[role] = data["video_preds"]
    assert preds["uniformer"].shape == preds["slowfast"].shape == (len(names), NUM_CLASSES)

    proc = run(
        "gen_pseudo_tools/generate_pseudo_label_stage1.py",
        "--config", REPO / "configs" / "pseudo" / "two_models.yaml", "--root", checkout,
        "--model-dir", "uniformer=exp_adapt_bn/uniformer_tiny", "--model-dir", "slowfast=exp_adapt_bn/sf_tiny",
        "--pkl-name", UNLABELLED_PKL, "--no-chart",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    # two_models.yaml: mean of the two softmaxes, keep confidence > mean - 0.5 * std (ddof 1)
    fused = 0.5 * softmax(preds["uniformer"], np.float64) + 0.5 * softmax(preds["slowfast"], np.float64)
    confidence = fused.max(axis=1)
    keep = confidence > confidence.mean() - 0.5 * confidence.std(ddof=1)
    assert 0 < keep.sum() < len(names)
    out = checkout / "data" / "pseudo" / "stage1.csv"
    assert f"kept {int(keep.sum())} of {len(names)} videos -> {out}" in proc.stdout
    got_names, labels, probs = read_pseudo_csv(out)
    assert got_names == [n for n, k in zip(names, keep) if k]  # list order
    np.testing.assert_array_equal(labels, fused.argmax(axis=1)[keep])
    assert ((labels >= 0) & (labels < NUM_CLASSES)).all()
    assert probs.shape == (keep.sum(), NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(probs, fused[keep], rtol=0, atol=1e-12)
    assert (out.parent / "stage1_decisions.csv").read_text().count("\n") == 1 + len(names)


def test_vote_on_the_testers_test_pkls(checkout, tmp_path):
    names, _ = read_video_list(checkout / "data" / "test.csv")
    fused = {}
    for view, pkl in TEST_PKLS.items():
        probs = []
        for _, folder, _, _ in ROLES.values():
            data = read_pkl(checkout / "exp_pseudo_stage4" / folder / pkl)
            assert data["video_names"] == names
            probs.append(softmax(data["video_preds"], np.float64))
        fused[view] = 0.5 * probs[0] + 0.5 * probs[1]
    one = read_pkl(checkout / "exp_pseudo_stage4" / "sf_tiny" / TEST_PKLS["1x1"])["video_preds"]
    nine = read_pkl(checkout / "exp_pseudo_stage4" / "sf_tiny" / TEST_PKLS["3x3"])["video_preds"]
    assert not np.allclose(one, nine)  # 3x3 sums nine clip outputs, 1x1 is one of them

    config = tmp_path / "ensemble.yaml"  # the shipped two-model ensemble with the tiny runs' PKL names
    config.write_text(
        f"_base_: {REPO / 'configs' / 'ensemble' / 'two_models.yaml'}\n"
        "pkl_sets:\n"
        f"  views_1x1: {{default: {TEST_PKLS['1x1']}}}\n"
        f"  views_3x3: {{default: {TEST_PKLS['3x3']}}}\n"
    )
    proc = run(
        "test_ensemble_vote.py", "--config", config, "--root", checkout,
        "--model-dir", "uniformer=exp_pseudo_stage4/uniformer_tiny",
        "--model-dir", "slowfast=exp_pseudo_stage4/sf_tiny", "--no-report",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    pred = {view: f.argmax(axis=1) for view, f in fused.items()}
    for view in TEST_PKLS:
        ids, got_names, classes, _ = read_submission(checkout / "submission" / f"pred_{view}.csv")
        assert got_names == names and ids == list(range(len(names)))
        np.testing.assert_array_equal(classes, pred[view])
    ids, got_names, classes, probs = read_submission(checkout / "submission" / "submission.csv")
    assert got_names == names and ids == list(range(len(names)))  # every test.csv row, in order
    agree = pred["1x1"] == pred["3x3"]
    np.testing.assert_array_equal(classes[agree], pred["1x1"][agree])
    assert ((classes == pred["1x1"]) | (classes == pred["3x3"])).all()
    np.testing.assert_allclose(probs, (fused["1x1"] + fused["3x3"]) / 2, rtol=0, atol=1e-9)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-9)
