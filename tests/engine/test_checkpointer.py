"""Checkpoint files: layout, atomic writes, RNG round trip, resume file choice and start-point priority."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nightcrawler.config import get_cfg
from nightcrawler.engine import checkpointer as ck
from nightcrawler.models.checkpoint import CheckpointError, load_pretrained


class _Net(nn.Module):
    """Stands in for a model: names chosen so the model loader can read its checkpoints."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.bn = nn.BatchNorm3d(4)
        self.head = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3, 4)))


def _trained(seed: int = 0) -> tuple[_Net, torch.optim.Optimizer, torch.amp.GradScaler]:
    torch.manual_seed(seed)
    net = _Net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(2, 3, 2, 2, 2)).sum().backward()
    opt.step()
    return net, opt, torch.amp.GradScaler("cpu", enabled=False)


def _cfg(tmp_path, **train):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.MODEL.NUM_CLASSES = 3
    for k, v in train.items():
        cfg.TRAIN[k] = v
    return cfg


def test_layout_is_the_originals_and_loads_weights_only(tmp_path):
    net, opt, scaler = _trained()
    cfg = _cfg(tmp_path)
    best = {"split": "arid", "top1_err": 12.5, "top5_err": 1.0, "epoch": 3}
    path = ck.save_checkpoint(
        ck.epoch_checkpoint_path(tmp_path, 2),
        net,
        opt,
        scaler,
        2,
        cfg,
        best_metric=best,
        rng_states=[ck.rng_state()],
    )
    assert path == tmp_path / "checkpoints" / "checkpoint_epoch_00003.pyth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {"epoch", "model_state", "optimizer_state", "scaler", "cfg", "best_metric", "rng_states"} <= set(
        state
    )
    assert state["epoch"] == 2 and state["best_metric"] == best
    assert yaml.safe_load(state["cfg"])["OUTPUT_DIR"] == str(tmp_path)
    assert set(state["model_state"]) == set(net.state_dict())
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
    # the models' loader (and thus the tester / a later stage) reads it as the original's layout
    fresh = _Net()
    report = load_pretrained(fresh, path)
    assert report.source_format == "pyth" and report.clean
    assert torch.equal(fresh.head.weight, net.head.weight)


def test_ddp_style_wrappers_are_saved_unwrapped(tmp_path):
    net, opt, scaler = _trained()
    wrapper = nn.DataParallel(net)
    path = ck.save_checkpoint(tmp_path / "x.pyth", wrapper, opt, scaler, 0, _cfg(tmp_path))
    keys = torch.load(path, weights_only=True)["model_state"].keys()
    assert not any(k.startswith("module.") for k in keys)


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    net, opt, scaler = _trained()
    cfg = _cfg(tmp_path)
    path = ck.latest_checkpoint_path(tmp_path)
    ck.save_checkpoint(path, net, opt, scaler, 0, cfg)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, net, opt, scaler, 1, cfg)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = ck.rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.save({"s": state}, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["s"]
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    ck.set_rng_state(loaded)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_resume_file_choice(tmp_path):
    assert ck.find_resume_checkpoint(tmp_path) is None
    d = tmp_path / "checkpoints"
    d.mkdir()
    for e in (1, 2, 10):
        (d / f"checkpoint_epoch_{e:05d}.pyth").write_bytes(b"x")
    (d / "notes.txt").write_text("not a checkpoint")
    assert ck.find_resume_checkpoint(tmp_path).name == "checkpoint_epoch_00010.pyth"
    (d / "checkpoint_latest.pyth").write_bytes(b"x")
    assert ck.find_resume_checkpoint(tmp_path).name == "checkpoint_latest.pyth"


def test_checkpoint_epochs():
    assert [e for e in range(10) if ck.is_checkpoint_epoch(e, 4, 10)] == [3, 7, 9]
    assert [e for e in range(3) if ck.is_checkpoint_epoch(e, 0, 3)] == [2]


def test_auto_resume_restores_everything(tmp_path):
    net, opt, scaler = _trained()
    cfg = _cfg(tmp_path, AUTO_RESUME=True)
    best = {"split": "arid", "top1_err": 40.0, "top5_err": 5.0, "epoch": 2}
    np.random.seed(5)
    states = [ck.rng_state()]
    expected_np = np.random.rand()
    ck.save_checkpoint(
        ck.latest_checkpoint_path(tmp_path), net, opt, scaler, 4, cfg, best_metric=best, rng_states=states
    )

    fresh, fresh_opt, fresh_scaler = _trained(seed=7)
    np.random.seed(0)
    start = ck.resolve_start(cfg, fresh, fresh_opt, fresh_scaler)
    assert (start.kind, start.epoch, start.best_metric, start.rng_restored) == ("resume", 5, best, True)
    assert np.random.rand() == expected_np
    for a, b in zip(fresh.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = fresh_opt.state_dict()["state"], opt.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sb)


def test_a_new_start_removes_what_a_killed_write_left_and_keeps_the_checkpoints(tmp_path):
    net, opt, scaler = _trained()
    cfg = _cfg(tmp_path, AUTO_RESUME=True)
    latest = ck.save_checkpoint(ck.latest_checkpoint_path(tmp_path), net, opt, scaler, 1, cfg)
    best = ck.save_checkpoint(ck.best_checkpoint_path(tmp_path), net, None, None, 1, cfg)
    # what atomic_open's temporary files look like when a SIGKILL lands during torch.save
    stale = [latest.parent / ".checkpoint_latest.pyth.k3j2.tmp", tmp_path / ".best.pyth.x9q1.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_text("not ours")
    start = ck.resolve_start(cfg, _trained(seed=3)[0], _trained(seed=3)[1], scaler)
    assert start.kind == "resume" and start.epoch == 2
    assert not any(p.exists() for p in stale)
    assert latest.is_file() and best.is_file() and unrelated.is_file()


def test_checkpoint_file_path_with_and_without_epoch_reset(tmp_path):
    net, opt, scaler = _trained()
    src = tmp_path / "stage1" / "best.pyth"
    ck.save_checkpoint(src, net, opt, scaler, 7, _cfg(tmp_path / "stage1"))

    cfg = _cfg(
        tmp_path / "stage2", AUTO_RESUME=True, CHECKPOINT_FILE_PATH=str(src), CHECKPOINT_EPOCH_RESET=True
    )
    fresh, fresh_opt, fresh_scaler = _trained(seed=3)
    start = ck.resolve_start(cfg, fresh, fresh_opt, fresh_scaler)
    assert (start.kind, start.epoch) == ("weights", 0)
    assert torch.equal(fresh.conv.weight, net.conv.weight)
    assert (
        fresh_opt.state_dict()["state"][0]["exp_avg"].abs().sum()
        != opt.state_dict()["state"][0]["exp_avg"].abs().sum()
    )

    cfg.TRAIN.CHECKPOINT_EPOCH_RESET = False
    fresh, fresh_opt, fresh_scaler = _trained(seed=3)
    start = ck.resolve_start(cfg, fresh, fresh_opt, fresh_scaler)
    assert (start.kind, start.epoch) == ("continue", 8)
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_scratch_and_mismatching_checkpoints(tmp_path):
    net, opt, scaler = _trained()
    cfg = _cfg(tmp_path, AUTO_RESUME=True)
    assert ck.resolve_start(cfg, net, opt, scaler).kind == "scratch"
    other = _Net(classes=5)
    ck.save_checkpoint(
        ck.latest_checkpoint_path(tmp_path), other, torch.optim.AdamW(other.parameters()), scaler, 0, cfg
    )
    with pytest.raises(CheckpointError, match="do not match"):
        ck.resolve_start(cfg, net, opt, scaler)
