"""Fault injection on training, each fault tried for real: a SIGKILL in the middle of a checkpoint write, a
truncated / garbage checkpoint, a NaN loss, a read-only or full output folder."""

from __future__ import annotations

import errno
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from nightcrawler.config import get_cfg
from nightcrawler.engine import checkpointer
from nightcrawler.engine import train as train_module
from nightcrawler.engine.checkpointer import (
    epoch_checkpoint_path,
    latest_checkpoint_path,
    resolve_start,
    save_checkpoint,
)
from nightcrawler.models.checkpoint import CheckpointError
from nightcrawler.utils import io as io_module
from nightcrawler.utils.errors import (
    EXIT_DIVERGED,
    EXIT_OUTPUT,
    OutputWriteError,
    TrainingDivergedError,
    exit_code_for,
)
from nightcrawler.utils.io import atomic_write, atomic_write_text
from tests.conftest import REPO_ROOT
from tests.engine.train_helpers import (
    TINY_UNIFORMER_YAML,
    model_state,
    run_training,
    synthetic_root,
    tiny_cfg,
    tiny_opts,
)

RUN_TIMEOUT_S = 600
KILL_DRIVER = Path(__file__).with_name("kill_during_save.py")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return synthetic_root(tmp_path_factory)


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------------- 1. SIGKILL
def _command(script: Path, data_root: Path, out: Path, max_epoch: int) -> list[str]:
    opts = tiny_opts(
        data_root,
        out,
        *("MIXUP.ENABLE", True, "SOLVER.MAX_EPOCH", max_epoch, "TRAIN.EVAL_SPLITS", "[]"),
        *("TRAIN.SAVE_LATEST", True, "TRAIN.AUTO_RESUME", True, "CPU_THREADS", 1),
    )
    return [sys.executable, str(script), "--cfg", str(TINY_UNIFORMER_YAML), *(str(v) for v in opts)]


def _run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env or os.environ.copy(),
    )


def test_sigkill_during_checkpoint_write_resumes_to_uninterrupted_weights(data_root, tmp_path):
    """The run SIGKILLs itself half-way through writing a checkpoint (which save, and how far into its bytes,
    drawn from a seeded RNG); the same command again resumes and ends bitwise equal to an uninterrupted run."""
    max_epoch = 3
    rng = random.Random(2026)
    kill_at, fraction = rng.randint(2, max_epoch), rng.uniform(0.05, 0.95)
    run_net = REPO_ROOT / "tools" / "run_net.py"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    res = _run(_command(run_net, data_root, whole, max_epoch))
    assert res.returncode == 0, res.stderr[-3000:]

    env = {**os.environ, "NC_FAULT_KILL_AT_SAVE": str(kill_at), "NC_FAULT_KILL_FRACTION": str(fraction)}
    res = _run(_command(KILL_DRIVER, data_root, killed, max_epoch), env)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    # the half-written temporary is there, the previous checkpoint is complete and untouched
    assert len(_temporaries(killed)) == 1
    assert torch.load(latest_checkpoint_path(killed), weights_only=True)["epoch"] == kill_at - 2

    res = _run(_command(run_net, data_root, killed, max_epoch))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"starting at epoch {kill_at}" in (killed / "stdout.log").read_text()
    assert _temporaries(killed) == []
    a, b = model_state(latest_checkpoint_path(whole)), model_state(latest_checkpoint_path(killed))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------------------------------------------- 2. corrupt
def _tiny_checkpoints(out: Path) -> tuple[object, dict[int, dict]]:
    """Epoch checkpoints 1 and 2 and a latest (epoch 3) of a small linear model; returns their weights."""
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(out)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    weights = {}
    for epoch in range(3):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        path = latest_checkpoint_path(out) if epoch == 2 else epoch_checkpoint_path(out, epoch)
        save_checkpoint(path, model, optimizer, None, epoch, cfg)
        weights[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    return cfg, weights


def _resume(cfg) -> tuple[checkpointer.StartPoint, nn.Module]:
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return resolve_start(cfg, model, optimizer, None), model


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_latest_checkpoint_falls_back_to_newest_loadable(tmp_path, caplog):
    cfg, weights = _tiny_checkpoints(tmp_path)
    latest, second, first = (
        latest_checkpoint_path(tmp_path),
        epoch_checkpoint_path(tmp_path, 1),
        epoch_checkpoint_path(tmp_path, 0),
    )
    start, model = _resume(cfg)
    assert (start.epoch, start.source) == (3, str(latest))  # intact: the original's rule, latest first

    _truncate(latest)
    with caplog.at_level(logging.WARNING, logger=checkpointer.__name__):
        start, model = _resume(cfg)
    assert (start.epoch, start.source, start.kind) == (2, str(second), "resume")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights[1].items())
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(latest) in warning and "not a readable PyTorch checkpoint" in warning

    second.write_bytes(b"garbage, not a checkpoint")
    start, model = _resume(cfg)
    assert (start.epoch, start.source) == (1, str(first))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights[0].items())

    _truncate(first)
    with pytest.raises(CheckpointError) as info:
        _resume(cfg)
    for path in (latest, second, first):
        assert str(path) in str(info.value)
    assert exit_code_for(info.value) == 4


# ---------------------------------------------------------------------------------------------------- 3. NaN
def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(
        data_root,
        tmp_path,
        *("SOLVER.MAX_EPOCH", 2, "SOLVER.WARMUP_EPOCHS", 0.0, "TRAIN.EVAL_SPLITS", []),
        *("TRAIN.SAVE_LATEST", True, "TRAIN.MAX_ITERS_PER_EPOCH", 2),
    )
    real = train_module.soft_target_cross_entropy
    calls = {"n": 0}

    def nan_in_epoch_two(logits, targets, reduction="mean"):
        calls["n"] += 1
        out = real(logits, targets, reduction)
        return out * float("nan") if calls["n"] == 3 else out  # epoch 2, iteration 1

    monkeypatch.setattr(train_module, "soft_target_cross_entropy", nan_in_epoch_two)
    latest = latest_checkpoint_path(tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at epoch 2, iteration 1") as info:
        run_training(cfg)
    assert exit_code_for(info.value) == EXIT_DIVERGED
    ckpt = torch.load(latest, weights_only=True)
    assert ckpt["epoch"] == 0  # the checkpoint of epoch 1, not overwritten
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values() if v.is_floating_point())
    assert not (tmp_path / "best.pyth").exists()
    assert _temporaries(tmp_path) == []


# ---------------------------------------------------------------------------------------------------- 5. output
@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs (a really full, then really read-only file system); skipped where mounting is refused."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_and_read_only_file_system_keep_previous_file(small_tmpfs):
    target = small_tmpfs / "checkpoint.pyth"
    atomic_write_text(target, "previous content")
    with pytest.raises(OutputWriteError, match="no space left on device") as info:
        atomic_write(target, lambda f: f.write(b"x" * 200_000))  # more than the 64 KiB file system
    assert info.value.path == str(target) and exit_code_for(info.value) == EXIT_OUTPUT
    assert target.read_text() == "previous content"
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["checkpoint.pyth"]

    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with pytest.raises(OutputWriteError, match="read-only file system"):
        atomic_write_text(target, "new content")
    assert target.read_text() == "previous content"


def test_output_error_while_training_stops_with_exit_code_5(data_root, tmp_path, monkeypatch):
    """The second checkpoint's rename fails with ENOSPC (in-process: the data folder is not on a small tmpfs);
    training stops with OutputWriteError and the first checkpoint is intact."""
    cfg = tiny_cfg(
        data_root,
        tmp_path,
        *("SOLVER.MAX_EPOCH", 2, "TRAIN.EVAL_SPLITS", []),
        *("TRAIN.SAVE_LATEST", True, "TRAIN.MAX_ITERS_PER_EPOCH", 1),
    )
    real_replace = os.replace
    latest = latest_checkpoint_path(tmp_path)

    def replace_fails_once_latest_exists(src, dst):
        if Path(dst) == latest and latest.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(io_module.os, "replace", replace_fails_once_latest_exists)
    with pytest.raises(OutputWriteError, match="no space left on device") as info:
        run_training(cfg)
    assert info.value.path == str(latest) and exit_code_for(info.value) == EXIT_OUTPUT
    assert torch.load(latest, weights_only=True)["epoch"] == 0
    assert _temporaries(tmp_path) == []


# ---------------------------------------------------------------------------------------------------- 4. one rank
def _processes_with_env(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment holds ``marker``: the job and everything it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def test_one_failing_rank_ends_the_gloo_job_without_orphans(data_root, tmp_path):
    out = tmp_path / "ddp"
    opts = tiny_opts(
        data_root,
        out,
        *(
            "NUM_CPU_PROCESSES",
            2,
            "SOLVER.MAX_EPOCH",
            1,
            "SOLVER.WARMUP_EPOCHS",
            0.0,
            "TRAIN.EVAL_SPLITS",
            "[]",
        ),
        *("IMPORTS", f"['{Path(__file__).with_name('failing_rank_model.py')}']"),
        *("MODEL.MODEL_NAME", "FailsOnRank1", "TRAIN.DIST_TIMEOUT_S", 60),
    )
    marker = f"NC_FAULT_JOB={os.getpid()}-{tmp_path.name}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "NC_FAULT_JOB": marker[13:]}
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "run_net.py"), "--cfg", str(TINY_UNIFORMER_YAML)]
    start = time.monotonic()
    res = subprocess.run(
        [*cmd, *map(str, opts)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    elapsed = time.monotonic() - start
    assert res.returncode != 0
    # the peer then fails too ("connection closed") and torch may report either; the launcher names the first
    assert "process 1 failed first:" in res.stderr, res.stderr[-3000:]
    assert "RuntimeError: injected failure on rank 1" in res.stderr
    assert elapsed < 120, elapsed  # rank 0 did not wait for the collective's timeout
    deadline = time.monotonic() + 10
    while _processes_with_env(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with_env(marker) == []
