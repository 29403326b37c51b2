"""A training run killed with SIGKILL and restarted with TRAIN.AUTO_RESUME ends with the weights of an
uninterrupted run (tools/run_net.py in subprocesses, tiny UniFormer, CPU, one thread, no loader workers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nightcrawler.engine.checkpointer import best_checkpoint_path, latest_checkpoint_path
from tests.conftest import REPO_ROOT
from tests.engine.train_helpers import TINY_UNIFORMER_YAML, model_state, synthetic_root, tiny_opts

MAX_EPOCH = 5
# 1-based: the run is killed at this epoch's first iteration, after the checkpoint of epoch 2 (index 1) is written
KILL_IN_EPOCH = 3
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return synthetic_root(tmp_path_factory)


def _command(data_root: Path, out: Path) -> list[str]:
    opts = tiny_opts(
        data_root,
        out,
        *("MIXUP.ENABLE", True, "UNIFORMER.DROP_DEPTH_RATE", 0.1, "SOLVER.MAX_EPOCH", MAX_EPOCH),
        *("TRAIN.SAVE_LATEST", True, "TRAIN.AUTO_RESUME", True, "CPU_THREADS", 1, "LOG_PERIOD", 1),
    )
    return [
        sys.executable,
        str(REPO_ROOT / "tools" / "run_net.py"),
        "--cfg",
        str(TINY_UNIFORMER_YAML),
        *(str(v) for v in opts),
    ]


def _run(data_root: Path, out: Path) -> None:
    res = subprocess.run(
        _command(data_root, out), cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert res.returncode == 0, res.stderr[-3000:]


def _train_iters(out: Path) -> list[tuple[int, int]]:
    """(epoch, iteration), 1-based, of the train_iter records written so far."""
    path = out / "stats.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if row.get("_type") == "train_iter":
            rows.append((int(row["epoch"].split("/")[0]), int(row["iter"].split("/")[0])))
    return rows


def _kill_during_epoch(data_root: Path, out: Path) -> tuple[int, int]:
    """Starts the run and SIGKILLs it once epoch KILL_IN_EPOCH has logged its first iteration: the checkpoint
    of the epoch before is then complete, and the next one is an epoch of training and evaluation away, so the
    kill lands between writes. Returns the epoch index saved in checkpoint_latest.pyth and the number of
    iterations the killed run logged."""
    proc = subprocess.Popen(
        _command(data_root, out),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (KILL_IN_EPOCH, 1) not in _train_iters(out):
            assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "epoch 3 never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL  # killed, not finished
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return torch.load(latest_checkpoint_path(out), weights_only=True)["epoch"], len(_train_iters(out))


def _temporary_files(out: Path) -> list[str]:
    return sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name
    )


def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_weights(data_root, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(data_root, whole)

    saved_epoch, logged = _kill_during_epoch(data_root, killed)
    assert 1 <= saved_epoch < MAX_EPOCH - 1  # at least the epoch of index 1 done, the run not over
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["checkpoint_latest.pyth"]
    assert _temporary_files(killed) == []
    ckpt = torch.load(latest_checkpoint_path(killed), weights_only=True)
    assert {"model_state", "optimizer_state", "rng_states", "best_metric"} <= set(ckpt)
    assert torch.load(best_checkpoint_path(killed), weights_only=True)["epoch"] <= saved_epoch

    _run(data_root, killed)  # the same command: TRAIN.AUTO_RESUME picks up checkpoint_latest.pyth
    log = (killed / "stdout.log").read_text()
    assert f"auto-resume from {latest_checkpoint_path(killed)}: starting at epoch {saved_epoch + 2}" in log
    # the resumed run trained only the epochs after the checkpoint, 3 iterations each
    resumed = _train_iters(killed)[logged:]
    assert resumed == [(e, i) for e in range(saved_epoch + 2, MAX_EPOCH + 1) for i in (1, 2, 3)]

    a, b = model_state(latest_checkpoint_path(whole)), model_state(latest_checkpoint_path(killed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    final = torch.load(latest_checkpoint_path(killed), weights_only=True)
    assert final["epoch"] == MAX_EPOCH - 1
    best, whole_best = (torch.load(best_checkpoint_path(d), weights_only=True) for d in (killed, whole))
    assert best["best_metric"] == whole_best["best_metric"]
    assert _temporary_files(killed) == [] and os.listdir(killed / "checkpoints") == ["checkpoint_latest.pyth"]
