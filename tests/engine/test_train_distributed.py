"""Two CPU processes (gloo) through the real launcher: one epoch, identical weights on both ranks."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import torch

from nightcrawler.engine.train import model_fingerprint
from nightcrawler.models import build_model
from tests.conftest import REPO_ROOT
from tests.engine.train_helpers import TINY_UNIFORMER_YAML, read_stats, synthetic_root, tiny_cfg, tiny_opts

_FINGERPRINT = re.compile(r"^(\[rank (\d+)\])?.*final model fingerprint: parameters (\w+) buffers (\w+)$")


def test_two_gloo_processes_train_one_epoch_with_identical_weights(tmp_path_factory, tmp_path):
    root = synthetic_root(tmp_path_factory)
    out = tmp_path / "ddp"
    opts = tiny_opts(
        root,
        out,
        *(
            "NUM_CPU_PROCESSES",
            2,
            "SOLVER.MAX_EPOCH",
            1,
            "SOLVER.WARMUP_EPOCHS",
            0.0,
            "BN.USE_PRECISE_STATS",
            True,
        ),
        *("MIXUP.ENABLE", True, "AUG.NUM_SAMPLE", 2, "UNIFORMER.DROP_DEPTH_RATE", 0.1),
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools" / "run_net.py"),
        "--cfg",
        str(TINY_UNIFORMER_YAML),
        *map(str, opts),
    ]
    res = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    log = (out / "stdout.log").read_text()
    assert "world size 2 on 1 machine(s), backend gloo" in log
    prints = {}
    for line in log.splitlines():
        m = _FINGERPRINT.match(line)
        if m:
            prints[int(m.group(2) or 0)] = (m.group(3), m.group(4))
    assert set(prints) == {0, 1}, log[-2000:]
    assert prints[0] == prints[1]  # parameters and (after the shared BN adaptation) buffers

    # rank 0 wrote the checkpoint of exactly those weights
    cfg = tiny_cfg(root, out)
    model = build_model(cfg)
    model.load_state_dict(
        torch.load(out / "checkpoints" / "checkpoint_latest.pyth", weights_only=True)["model_state"]
    )
    assert model_fingerprint(model) == prints[0]

    # 12 labelled videos over 2 processes x 2 videos per batch: 3 iterations; metrics over both processes
    iters = read_stats(out, "train_iter")
    assert [r["iter"] for r in iters] == ["1/3", "2/3", "3/3"]
    vals = read_stats(out, "val_epoch")
    assert [(r["split"], r["num_videos"]) for r in vals] == [("val_dry", 6), ("arid", 6)]
    assert not any("json_stats" in line and line.startswith("[rank 1]") for line in log.splitlines())
    assert len(read_stats(out)) == len(iters) + len(vals) + 1  # stats.jsonl is written by rank 0 only
