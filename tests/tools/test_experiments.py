"""Every experiment folder: its config loads, follows the original's per-folder settings (spec §12.3), builds
its model at full size with the manifest's parameter count, and its scripts run from the repository root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nightcrawler.config import assert_and_infer_cfg, load_config
from nightcrawler.models import build_model
from tests.conftest import REPO_ROOT, parity_dir

MODELS = ("uniformer_b32_k600", "uniformer_b32_ssv2", "mvit_b32_k600", "sf32_k700")
FOLDERS = ["exp_adapt_bn", *(f"exp_pseudo_stage{k}" for k in range(1, 5))]
EXPERIMENTS = [f"{f}/{m}" for f in FOLDERS for m in MODELS] + ["exp_experts/uniformer_b32_ssv2"]
EPOCHS = {"uniformer_b32_k600": 20, "uniformer_b32_ssv2": 30, "mvit_b32_k600": 20, "sf32_k700": 40}
MANIFEST = {"Uniformer": "uniformer_b32_k600", "MViT": "mvit_b32_k600", "SF": "sf32_k700"}


def test_the_experiment_tree_is_complete():
    found = sorted(str(p.parent.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("exp_*/*/config.yaml"))
    assert found == sorted(EXPERIMENTS)
    for exp in EXPERIMENTS:
        for script in ("run.sh", "test.sh"):
            text = (REPO_ROOT / exp / script).read_text()
            assert f"--cfg {exp}/config.yaml" in text and '"$@"' in text
            assert "/home/" not in text and "/mnt/" not in text  # no machine-specific paths


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_config_follows_the_original(exp):
    cfg = assert_and_infer_cfg(load_config(str(REPO_ROOT / exp / "config.yaml")))
    folder, model = exp.split("/")
    assert cfg.OUTPUT_DIR == exp
    assert cfg.SOLVER.MAX_EPOCH == EPOCHS[model]
    assert cfg.SOLVER.WEIGHT_DECAY == (0.1 if model.startswith("mvit") else 0.03)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_EPOCHS, cfg.TRAIN.BATCH_SIZE, cfg.RNG_SEED) == (
        1e-4,
        10.0,
        32,
        6666,
    )
    assert cfg.BN.USE_PRECISE_STATS and cfg.AUG.NUM_SAMPLE == 2 and cfg.MIXUP.ENABLE
    assert cfg.DATA.NUM_FRAMES == 32 and cfg.DATA.TEST_CROP_SIZE == 224 and cfg.MODEL.NUM_CLASSES == 11
    if folder.startswith("exp_pseudo_stage"):
        k = int(folder[-1])
        prev = "exp_adapt_bn" if k == 1 else f"exp_pseudo_stage{k - 1}"
        assert cfg.TRAIN.CHECKPOINT_FILE_PATH == f"{prev}/{model}/best.pyth"
        assert cfg.TRAIN.CHECKPOINT_EPOCH_RESET and cfg.DATA.PSEUDO_CSV == f"pseudo/stage{k}.csv"
        assert cfg.TRAIN.THRESHOLD == -1.0
        assert cfg.TEST.DATA_SELECT == ("test" if k == 4 else "total_unlabel")
    elif folder == "exp_experts":
        assert cfg.TRAIN.DATASET == cfg.TEST.DATASET == "ug2" and cfg.DATA.PSEUDO_CSV == "pseudo/stage4.csv"
        assert cfg.UNIFORMER.PRETRAIN_NAME == "uniformer_base_sthv2_32_prek400"
    else:
        assert cfg.DATA.PSEUDO_CSV == "" and cfg.TEST.DATA_SELECT == "total_unlabel"


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_builds_its_full_size_model(exp):
    cfg = load_config(str(REPO_ROOT / exp / "config.yaml"), ["NUM_GPUS", 0])
    with torch.device("meta"):
        model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    manifest = parity_dir() / "manifests" / f"manifest_{MANIFEST[cfg.MODEL.MODEL_NAME]}.json"
    if not manifest.exists():
        pytest.skip(f"parity manifests not found at {manifest.parent}")
    data = json.loads(manifest.read_text())
    expected = [(e["key"], tuple(e["shape"])) for e in data["state_dict"]]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert params == data["num_parameters"]


def test_scripts_accept_overrides_and_reject_unknown_keys(tmp_path):
    import subprocess

    res = subprocess.run(
        ["bash", str(REPO_ROOT / "exp_adapt_bn/mvit_b32_k600/test.sh"), "NO.SUCH_KEY", "1"],
        cwd=Path(tmp_path), capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHON": __import__("sys").executable},
    )  # fmt: skip
    assert res.returncode != 0 and "NO.SUCH_KEY" in res.stderr
