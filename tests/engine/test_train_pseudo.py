"""Pseudo-label training: alternating labelled / pseudo-labelled optimiser steps, hard labels by default,
and the switches that make the original's dead threshold and unused probabilities work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nightcrawler.config import get_cfg
from nightcrawler.data.csvs import parse_video_list
from nightcrawler.engine import train as train_module
from nightcrawler.engine.losses import soft_target_cross_entropy, soft_targets_from_probs
from nightcrawler.engine.optim import LrSchedule
from tests.engine.train_helpers import (
    NUM_CLASSES,
    read_stats,
    run_training,
    synthetic_root,
    tiny_cfg,
    write_pseudo_csv,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = synthetic_root(tmp_path_factory)
    write_pseudo_csv(root)
    return root


def _record(monkeypatch) -> list[dict]:
    """Wraps the step and the pseudo batch preparation to record what each optimiser step received."""
    calls: list[dict] = []
    real_step, real_pseudo = train_module.optimisation_step, train_module.pseudo_inputs

    def step(model, optimizer, precision, inputs, targets, clip_norm, **kw):
        calls.append(
            {"where": kw.get("where", ""), "targets": targets.clone(), "lr": optimizer.param_groups[0]["lr"]}
        )
        calls[-1].update(select=kw.get("select"), weight=kw.get("weight", 1.0))
        result = real_step(model, optimizer, precision, inputs, targets, clip_norm, **kw)
        calls[-1]["kept"] = result.kept
        return result

    def pseudo(run, batch):
        x, t = real_pseudo(run, batch)
        calls.append({"pseudo_index": batch["index"].clone(), "pseudo_labels": batch["labels"].clone()})
        return x, t

    monkeypatch.setattr(train_module, "optimisation_step", step)
    monkeypatch.setattr(train_module, "pseudo_inputs", pseudo)
    return calls


def _pseudo_cfg(root, out, *opts):
    return tiny_cfg(
        root,
        out,
        *(
            "DATA.PSEUDO_CSV",
            "pseudo.csv",
            "TRAIN.BATCH_SIZE",
            2,
            "SOLVER.MAX_EPOCH",
            1,
            "SOLVER.WARMUP_EPOCHS",
            0.0,
        ),
        *("TRAIN.EVAL_SPLITS", [], "TRAIN.SAVE_LATEST", False),
        *opts,
    )


def _steps(calls: list[dict]) -> list[dict]:
    """Merges each pseudo batch record into the step record that follows it."""
    out, pending = [], {}
    for c in calls:
        if "pseudo_index" in c:
            pending = c
        else:
            out.append({**c, **pending} if "pseudo-labelled" in c["where"] else c)
            pending = {} if "pseudo-labelled" in c["where"] else pending
    return out


def test_default_alternates_steps_with_hard_pseudo_labels(data_root, tmp_path, monkeypatch):
    calls = _record(monkeypatch)
    run_training(_pseudo_cfg(data_root, tmp_path))
    steps = _steps(calls)
    # 12 labelled videos -> 6 batches of 2, 6 pseudo videos -> 3 batches: zip gives 3 iterations, 2 steps each
    kinds = ["pseudo" if "pseudo-labelled" in s["where"] else "labelled" for s in steps]
    assert kinds == ["labelled", "pseudo"] * 3
    rows = parse_video_list(data_root / "pseudo.csv", num_classes=NUM_CLASSES, separator=",")
    for labelled, pseudo in zip(steps[0::2], steps[1::2]):
        assert labelled["lr"] == pseudo["lr"]  # one LR per iteration, both steps
        assert pseudo["select"] is None and pseudo["weight"] == 1.0 and pseudo["kept"] == 1.0
        # hard targets: the CSV's label column of exactly these videos
        assert pseudo["targets"].dtype == torch.long
        expected = torch.tensor([rows[i].label for i in pseudo["pseudo_index"].tolist()])
        assert torch.equal(pseudo["targets"], expected)
    it_stats = read_stats(tmp_path, "train_iter")
    assert len(it_stats) == 3 and all("pseudo_loss" in r and r["pseudo_kept"] == 1.0 for r in it_stats)
    # 3 iterations run, but the LR schedule counts the labelled loader's 6 (the original's rule)
    assert [r["iter"] for r in it_stats] == ["1/3", "2/3", "3/3"]
    schedule = LrSchedule.from_cfg(_pseudo_cfg(data_root, tmp_path))
    assert [r["lr"] for r in it_stats] == pytest.approx([schedule.lr_at(i / 6) for i in range(3)], rel=1e-5)


def test_switches_apply_the_threshold_and_train_on_soft_targets(data_root, tmp_path, monkeypatch):
    calls = _record(monkeypatch)
    cfg = _pseudo_cfg(
        data_root,
        tmp_path,
        *("TRAIN.PSEUDO_APPLY_THRESHOLD", True, "TRAIN.THRESHOLD", 0.0, "TRAIN.PSEUDO_SOFT_TARGETS", True),
        *("MODEL.SOFT_T", 0.5, "TRAIN.PSEUDO_LOSS_WEIGHT", 0.5),
    )
    run_training(cfg)
    pseudo_steps = [s for s in _steps(calls) if "pseudo-labelled" in s["where"]]
    assert len(pseudo_steps) == 3
    rows = parse_video_list(data_root / "pseudo.csv", num_classes=NUM_CLASSES, separator=",")
    for s in pseudo_steps:
        assert s["select"] is not None and s["weight"] == 0.5
        # threshold 0: clips above the batch mean of top-1 confidence; of 2 different clips, exactly one
        assert s["kept"] == 0.5
        probs = torch.tensor([rows[i].probs for i in s["pseudo_index"].tolist()])
        torch.testing.assert_close(s["targets"], soft_targets_from_probs(probs, 0.5))
    assert all(r["pseudo_kept"] == 0.5 for r in read_stats(tmp_path, "train_iter"))


def test_threshold_minus_one_keeps_every_clip_and_soft_targets_mix(data_root, tmp_path, monkeypatch):
    calls = _record(monkeypatch)
    cfg = _pseudo_cfg(
        data_root,
        tmp_path,
        *("TRAIN.PSEUDO_APPLY_THRESHOLD", True, "TRAIN.THRESHOLD", -1.0, "TRAIN.PSEUDO_SOFT_TARGETS", True),
        *("MIXUP.ENABLE", True, "AUG.NUM_SAMPLE", 2),
    )
    run_training(cfg)
    pseudo_steps = [s for s in _steps(calls) if "pseudo-labelled" in s["where"]]
    for s in pseudo_steps:
        assert s["kept"] == 1.0
        assert s["targets"].shape == (4, NUM_CLASSES)  # 2 videos x NUM_SAMPLE 2, mixed soft targets
        torch.testing.assert_close(s["targets"].sum(-1), torch.ones(4))


def test_masked_step_trains_only_on_the_selected_clips():
    """The gradient of a masked step equals the gradient of the loss over the kept clips alone."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    reference = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(4, 3, 1, 2, 2), torch.tensor([0, 1, 2, 1])
    keep = torch.tensor([True, False, True, False])
    precision = train_module.Precision.from_cfg(get_cfg(), torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = train_module.optimisation_step(
        model, opt, precision, x, y, None, weight=2.0, select=lambda _: keep
    )
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    (2.0 * soft_target_cross_entropy(reference(x[keep]), y[keep])).backward()
    ref_opt.step()
    assert result.kept == 0.5
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
