"""Determinism: the same seed and config give byte-identical PKLs, pseudo-label CSVs and submissions.

The smallest full chain, run twice in separate folders: the tiny UniFormer trained one epoch on the synthetic
set, tested on total_unlabel and test (1x1 PKLs), the stage-1 script on the unlabelled PKL, the vote on the test
PKL (both roles of the two-model configs read the one model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from nightcrawler.engine import test as tester
from nightcrawler.pseudo.cli import stage_main, vote_main
from tests.engine.train_helpers import run_training, synthetic_root, tiny_cfg

REPO = Path(__file__).resolve().parents[2]
FOLDER = "uniformer_tiny"


def _pipeline(data_root: Path, root: Path) -> dict[str, bytes]:
    (root / "data").mkdir(parents=True)
    for name in ("total_unlabel.csv", "test.csv"):
        shutil.copy(data_root / name, root / "data" / name)
    common = (
        "MODEL.NUM_CLASSES",
        11,
        "SOLVER.MAX_EPOCH",
        1,
        "SOLVER.WARMUP_EPOCHS",
        0.0,
        "TRAIN.EVAL_SPLITS",
        [],
    )
    run_training(tiny_cfg(data_root, root / "train", *common), seed=0)
    ckpt = sorted((root / "train" / "checkpoints").glob("*.pyth"))[-1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for split, exp in (("total_unlabel", "exp_adapt_bn"), ("test", "exp_pseudo_stage4")):
            cfg = tiny_cfg(
                data_root, root / exp / FOLDER, *common,
                "TRAIN.ENABLE", False, "TEST.ENABLE", True, "TEST.CHECKPOINT_FILE_PATH", str(ckpt),
                "TEST.DATA_SELECT", split, "TEST.PLOTS", False,
            )  # fmt: skip
            torch.manual_seed(0)
            tester.test(cfg)
    finally:
        torch.set_num_threads(threads)
    (unlabelled_pkl,) = (root / "exp_adapt_bn" / FOLDER).glob("total_unlabel*.pkl")
    (test_pkl,) = (root / "exp_pseudo_stage4" / FOLDER).glob("test*.pkl")
    two_roles = ["--model-dir", f"uniformer={{}}/{FOLDER}", "--model-dir", f"slowfast={{}}/{FOLDER}"]
    argv = ["--config", str(REPO / "configs" / "pseudo" / "two_models.yaml"), "--root", str(root)]
    argv += [a.format("exp_adapt_bn") for a in two_roles] + ["--pkl-name", unlabelled_pkl.name, "--no-report"]
    assert stage_main(1, argv) == 0
    vote_cfg = root / "vote.yaml"
    vote_cfg.write_text(
        f"_base_: {REPO / 'configs' / 'ensemble' / 'two_models.yaml'}\n"
        "pkl_sets:\n"
        f"  views_1x1: {{default: {test_pkl.name}}}\n"
        f"  views_3x3: {{default: {test_pkl.name}}}\n"
    )
    argv = ["--config", str(vote_cfg), "--root", str(root), "--no-report"]
    assert vote_main(argv + [a.format("exp_pseudo_stage4") for a in two_roles]) == 0
    files = [unlabelled_pkl, test_pkl, root / "data" / "pseudo" / "stage1.csv"]
    files += sorted((root / "submission").glob("*.csv"))
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_same_seed_and_config_give_identical_outputs(tmp_path_factory, tmp_path):
    data_root = synthetic_root(tmp_path_factory)
    first = _pipeline(data_root, tmp_path / "a")
    second = _pipeline(data_root, tmp_path / "b")
    assert len(first) >= 4 and any(k.startswith("submission") for k in first)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], f"{name} differs between two identical runs"
