"""The recipes of docs/ARCHITECTURE.md: a model, an enhancement and a pseudo-label rule from examples/, each in
one file outside the package, used through IMPORTS alone."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from nightcrawler.config import ConfigError, assert_and_infer_cfg, load_config
from nightcrawler.data.enhance import build_enhancement
from nightcrawler.pseudo.config import parse_selection
from nightcrawler.pseudo.thresholds import select_rows
from nightcrawler.utils.imports import import_modules
from tests.conftest import REPO_ROOT
from tests.engine.train_helpers import NUM_CLASSES, read_stats, synthetic_root, tiny_opts

EXAMPLES = REPO_ROOT / "examples"


def _yaml(tmp_path, body: str):
    path = tmp_path / "user.yaml"
    path.write_text(body)
    return path


def test_model_and_enhancement_train_adapt_bn_and_test_3x3_through_imports(tmp_path_factory, tmp_path):
    root = synthetic_root(tmp_path_factory)
    out = tmp_path / "run"
    cfg_file = _yaml(
        tmp_path,
        f"IMPORTS: ['{EXAMPLES / 'tiny_c3d.py'}', '{EXAMPLES / 'auto_gain.py'}']\n"
        "MODEL:\n  MODEL_NAME: TinyC3D\n"
        "ENHANCE:\n  TEST: 'autogain:target=0.4,max_gain=8'\n  BN: autogain\n  EVAL: autogain\n",
    )
    opts = tiny_opts(
        root,
        out,
        *("SOLVER.MAX_EPOCH", 1, "SOLVER.WARMUP_EPOCHS", 0.0, "BN.USE_PRECISE_STATS", True),
        *("TEST.DATA_SELECT", "arid"),
        *("TEST.NUM_ENSEMBLE_VIEWS", 3, "TEST.NUM_SPATIAL_CROPS", 3, "TEST.ENABLE", True),
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "run_net.py"), "--cfg", str(cfg_file), *map(str, opts)]
    res = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = (out / "stdout.log").read_text()
    assert "adapt BN: 3 BatchNorm layers re-estimated" in log  # the example model's BN, on autogain clips
    assert "3x3@autogain-target0.4-max_gain8" in log
    assert [r["split"] for r in read_stats(out, "val_epoch")]  # training-time evaluation ran
    files = sorted(p.name for p in out.glob("arid*.pkl"))
    assert len(files) == 1 and files[0].endswith("x3x3.pkl"), files
    with open(out / files[0], "rb") as f:
        pkl = pickle.load(f)
    assert pkl["video_preds"].shape == (6, NUM_CLASSES) and np.isfinite(pkl["video_preds"]).all()
    weights = torch.load(out / "checkpoints" / "checkpoint_latest.pyth", weights_only=True)["model_state"]
    assert "classifier.weight" in weights and "features.1.running_mean" in weights


def test_user_registrations_are_checked_at_load_time(tmp_path):
    cfg = load_config(str(_yaml(tmp_path, f"IMPORTS: ['{EXAMPLES / 'auto_gain.py'}']\n")))
    cfg.ENHANCE.TEST = "autogain:target=2"
    with pytest.raises(ConfigError, match="ENHANCE.TEST.*target"):
        assert_and_infer_cfg(cfg)
    with pytest.raises(ConfigError, match="no_such_module"):
        load_config(str(_yaml(tmp_path, "IMPORTS: [no_such_module]\n")))
    dark = torch.full((2, 4, 4, 3), 20, dtype=torch.uint8)
    bright = build_enhancement("autogain:target=0.4")(dark)
    assert bright.dtype == torch.uint8 and bright.shape == dark.shape and int(bright[0, 0, 0, 0]) == 102


def test_pseudo_label_rule_through_imports():
    import_modules([str(EXAMPLES / "top_fraction.py")])
    spec = parse_selection({"method": "top_fraction", "fraction": 0.5}, "stage.yaml", 2)
    labels = np.array([0, 0, 0, 0, 1, 1])
    confidence = np.array([0.9, 0.2, 0.8, 0.4, 0.3, 0.7])
    assert select_rows(labels, confidence, spec, 2).tolist() == [True, False, True, False, False, True]
