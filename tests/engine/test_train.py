"""The training loop end to end on generated videos with a tiny UniFormer (CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from nightcrawler.config import get_cfg
from nightcrawler.engine import train as train_module
from nightcrawler.engine.checkpointer import best_checkpoint_path, latest_checkpoint_path
from nightcrawler.engine.optim import LrSchedule
from nightcrawler.utils.errors import TrainingDivergedError
from tests.engine.train_helpers import model_state, read_stats, run_training, synthetic_root, tiny_cfg

OVERFIT_EPOCHS = 10


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return synthetic_root(tmp_path_factory)


@pytest.fixture(scope="module")
def overfit_run(data_root, tmp_path_factory):
    """Ten epochs on the 12 labelled videos, light augmentation, evaluation on val_dry and arid."""
    out = tmp_path_factory.mktemp("overfit")
    cfg = tiny_cfg(
        data_root,
        out,
        *("SOLVER.MAX_EPOCH", OVERFIT_EPOCHS, "SOLVER.BASE_LR", 5e-3, "DATA.RANDOM_FLIP", False),
        *("DATA.TRAIN_JITTER_SCALES", [32, 32], "TENSORBOARD.ENABLE", True, "LOG_PERIOD", 2),
        *("TRAIN.SAVE_LATEST", False, "TRAIN.CHECKPOINT_PERIOD", 4),
    )
    model = run_training(cfg)
    return cfg, out, model


def test_tiny_model_overfits_the_labelled_set(overfit_run):
    _, out, _ = overfit_run
    epochs = read_stats(out, "train_epoch")
    assert len(epochs) == OVERFIT_EPOCHS
    first, last = epochs[0]["loss"], (epochs[-1]["loss"] + epochs[-2]["loss"]) / 2
    assert last < 0.75 * first, (first, last)
    val_dry = [r for r in read_stats(out, "val_epoch") if r["split"] == "val_dry"]
    # val_dry's 6 videos are part of the labelled training list: the model must have learnt them
    assert [r["top1_err"] for r in val_dry[-3:]] == [0.0, 0.0, 0.0]
    assert val_dry[-1]["min_top1_err"] == 0.0 and val_dry[-1]["num_videos"] == 6


def test_learning_rate_of_every_logged_iteration_follows_the_schedule(overfit_run):
    cfg, out, _ = overfit_run
    schedule = LrSchedule.from_cfg(cfg)
    rows = read_stats(out, "train_iter")
    assert rows
    for row in rows:
        epoch = int(row["epoch"].split("/")[0]) - 1
        it, n = (int(v) for v in row["iter"].split("/"))
        assert n == 3  # 12 videos / 4 per batch
        assert row["lr"] == pytest.approx(schedule.lr_at(epoch + (it - 1) / n), rel=1e-5, abs=1e-9)
    # spot values: warm-up start, end of warm-up, the last iteration
    by_pos = {(r["epoch"], r["iter"]): r["lr"] for r in rows}
    assert by_pos[("1/10", "2/3")] == pytest.approx(1e-4 + (5e-3 - 1e-4) / 3, rel=1e-5)
    last = 1e-4 + (5e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (9 + 2 / 3 - 1) / 9))
    assert by_pos[("10/10", "3/3")] == pytest.approx(last, rel=1e-5)


def test_outputs_a_researcher_sees(overfit_run):
    cfg, out, model = overfit_run
    vals = read_stats(out, "val_epoch")
    assert [r["split"] for r in vals[:2]] == ["val_dry", "arid"] and len(vals) == 2 * OVERFIT_EPOCHS
    # periodic checkpoints (every 4 epochs and the last), best.pyth = best arid epoch
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [
        "checkpoint_epoch_00004.pyth",
        "checkpoint_epoch_00008.pyth",
        "checkpoint_epoch_00010.pyth",
    ]
    best = torch.load(best_checkpoint_path(out), weights_only=True)
    arid = [r["top1_err"] for r in vals if r["split"] == "arid"]
    best_epoch = max(i for i, e in enumerate(arid) if e == min(arid)) + 1  # ties: the later epoch (<=)
    assert best["epoch"] == best_epoch - 1 and best["best_metric"]["top1_err"] == pytest.approx(
        min(arid), abs=1e-4
    )
    last = torch.load(out / "checkpoints" / "checkpoint_epoch_00010.pyth", weights_only=True)
    assert all(torch.equal(last["model_state"][k], v) for k, v in model.state_dict().items())
    # plots, TensorBoard events, progress lines
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert "confusion_arid_epoch00010.png" in plots and len(plots) == 2 * OVERFIT_EPOCHS
    assert (out / "plots" / plots[0]).read_bytes()[:4] == b"\x89PNG"
    _assert_tensorboard_scalars(out / f"runs-{cfg.TRAIN.DATASET}", out)
    log = (out / "stdout.log").read_text()
    assert "epoch 10/10 | iter 2/3 | loss" in log and "| eta " in log and "| mem " in log
    assert "final model fingerprint" in log
    epoch_stats = read_stats(out, "train_epoch")[-1]
    assert epoch_stats["failed_videos"] == 0 and {"loss", "top1_err", "top5_err", "lr", "dt"} <= set(
        epoch_stats
    )


def _assert_tensorboard_scalars(log_dir, out):
    """The events file holds the figures of stats.jsonl: train loss and lr at every logged iteration (LOG_PERIOD
    2 of 3 iterations: the 2nd and the 3rd), per-epoch train loss, per-split accuracy every epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"Train/loss", "Train/lr", "Train/top1_err", "Train_epoch/loss", "Train_epoch/lr"} <= tags
    assert {f"Val/{split}/{m}" for split in ("val_dry", "arid") for m in ("top1_acc", "top1_err")} <= tags

    def series(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    iters = read_stats(out, "train_iter")
    steps = [3 * (int(r["epoch"].split("/")[0]) - 1) + int(r["iter"].split("/")[0]) - 1 for r in iters]
    assert steps == [3 * e + i for e in range(OVERFIT_EPOCHS) for i in (1, 2)]
    for key in ("loss", "lr"):
        logged = series(f"Train/{key}")
        assert [s for s, _ in logged] == steps
        # stats.jsonl keeps 6 significant digits, the events file float32
        assert [v for _, v in logged] == pytest.approx([r[key] for r in iters], rel=1e-5)
    train_epochs = series("Train_epoch/loss")
    assert [s for s, _ in train_epochs] == list(range(1, OVERFIT_EPOCHS + 1))
    expected = [r["loss"] for r in read_stats(out, "train_epoch")]
    assert [v for _, v in train_epochs] == pytest.approx(expected, rel=1e-5)
    for split in ("val_dry", "arid"):
        rows = [r for r in read_stats(out, "val_epoch") if r["split"] == split]
        acc = series(f"Val/{split}/top1_acc")
        assert [s for s, _ in acc] == [r["epoch"] for r in rows] == list(range(1, OVERFIT_EPOCHS + 1))
        assert [v for _, v in acc] == pytest.approx([100.0 - r["top1_err"] for r in rows], abs=1e-4)


def _resume_cfg(data_root, out):
    return tiny_cfg(
        data_root,
        out,
        *("AUG.ENABLE", True, "AUG.NUM_SAMPLE", 2, "MIXUP.ENABLE", True, "UNIFORMER.DROP_DEPTH_RATE", 0.1),
        *("BN.USE_PRECISE_STATS", True, "SOLVER.MAX_EPOCH", 3, "TRAIN.SAVE_LATEST", True),
    )


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(data_root, tmp_path, monkeypatch):
    """Augmentation, Mixup/CutMix, stochastic depth and BN adaptation all draw random numbers: the resume
    must restore every random state (DATA_LOADER.NUM_WORKERS 0)."""
    whole = tmp_path / "whole"
    run_training(_resume_cfg(data_root, whole), seed=0)

    crashed = tmp_path / "crashed"
    real_epoch = train_module.train_one_epoch

    def crash_in_epoch_3(run, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        return real_epoch(run, epoch)

    monkeypatch.setattr(train_module, "train_one_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(_resume_cfg(data_root, crashed), seed=0)
    assert torch.load(latest_checkpoint_path(crashed), weights_only=True)["epoch"] == 1
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    run_training(_resume_cfg(data_root, crashed), seed=12345)  # another seed: the checkpoint's states rule

    a, b = model_state(latest_checkpoint_path(whole)), model_state(latest_checkpoint_path(crashed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (crashed / "stdout.log").read_text()
    assert "auto-resume from" in log and "starting at epoch 3" in log
    # the best metric survived the resume: best.pyth is the better of the epochs, not the last one evaluated
    best = torch.load(best_checkpoint_path(crashed), weights_only=True)["best_metric"]
    whole_best = torch.load(best_checkpoint_path(whole), weights_only=True)["best_metric"]
    assert best == whole_best


def test_nan_loss_stops_with_epoch_and_iteration(data_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(
        data_root, tmp_path, "SOLVER.MAX_EPOCH", 1, "SOLVER.WARMUP_EPOCHS", 0.0, "TRAIN.EVAL_SPLITS", []
    )
    real = train_module.soft_target_cross_entropy
    calls = {"n": 0}

    def nan_on_second_call(logits, targets, reduction="mean"):
        calls["n"] += 1
        out = real(logits, targets, reduction)
        return out * float("nan") if calls["n"] == 2 else out

    monkeypatch.setattr(train_module, "soft_target_cross_entropy", nan_on_second_call)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, iteration 2 \(labelled batch\)"):
        run_training(cfg)


def test_iterations_per_epoch_rules():
    c = get_cfg()
    assert train_module.iterations_per_epoch(c, 92, 150) == (92, 92)
    assert train_module.iterations_per_epoch(c, 92, 40) == (40, 92)  # zip stops early; LR counts the labelled
    c.TRAIN.MAX_ITERS_PER_EPOCH = 10
    assert train_module.iterations_per_epoch(c, 92, None) == (10, 10)
    # one pass over the pseudo loader, however long, and the LR schedule counts it
    c.TRAIN.MAX_ITERS_PER_EPOCH = 0
    c.TRAIN.PSEUDO_EPOCH_LENGTH = "pseudo"
    assert train_module.iterations_per_epoch(c, 92, 150) == (150, 150)
    assert train_module.iterations_per_epoch(c, 92, None) == (92, 92)
    c.TRAIN.PSEUDO_EPOCH_LENGTH = "longest"
    with pytest.raises(ValueError, match="PSEUDO_EPOCH_LENGTH"):
        train_module.iterations_per_epoch(c, 92, 150)


def test_pseudo_epoch_length_cycles_the_labelled_loader():
    run = train_module.TrainingRun.__new__(train_module.TrainingRun)
    c = get_cfg()
    c.TRAIN.PSEUDO_EPOCH_LENGTH = "pseudo"
    run.cfg, run.labelled, run.pseudo, run.iters_per_epoch = c, [1, 2], ["a", "b", "c", "d", "e"], 5
    assert list(run.batch_iterator()) == [(1, "a"), (2, "b"), (1, "c"), (2, "d"), (1, "e")]
    c.TRAIN.PSEUDO_EPOCH_LENGTH = "shorter"
    run.iters_per_epoch = 2
    assert list(run.batch_iterator()) == [(1, "a"), (2, "b")]


@pytest.mark.parametrize(
    ("device", "mode", "cpu_bf16", "dtype"),
    [
        ("cuda", "fp16", False, torch.float16),
        ("cuda", "bf16", False, torch.bfloat16),
        ("cuda", "none", False, None),
        ("cpu", "fp16", False, None),  # the CPU trains in FP32 unless TRAIN.CPU_BF16
        ("cpu", "fp16", True, torch.bfloat16),
    ],
)
def test_precision_choice(device, mode, cpu_bf16, dtype, recwarn):
    cfg = get_cfg()
    cfg.TRAIN.MIXED_PRECISION = mode
    cfg.TRAIN.CPU_BF16 = cpu_bf16
    p = train_module.Precision.from_cfg(cfg, torch.device(device))
    assert p.dtype == dtype
    if device == "cpu":
        assert not p.scaler.is_enabled()  # the gradient scaler only serves FP16 on CUDA


def test_cpu_bf16_trains_an_epoch(data_root, tmp_path):
    cfg = tiny_cfg(
        data_root, tmp_path, "TRAIN.CPU_BF16", True, "SOLVER.MAX_EPOCH", 1, "SOLVER.WARMUP_EPOCHS", 0.0
    )
    model = run_training(cfg)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert "precision torch.bfloat16" in (tmp_path / "stdout.log").read_text()
    assert all(math.isfinite(r["loss"]) for r in read_stats(tmp_path, "train_iter"))


def test_gradient_is_clipped_to_the_total_l2_norm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    precision = train_module.Precision.from_cfg(get_cfg(), torch.device("cpu"))
    x, y = 100.0 * torch.randn(4, 3, 1, 2, 2), torch.tensor([0, 1, 2, 1])
    train_module.optimisation_step(model, opt, precision, x, y, 20.0)
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert step.norm().item() == pytest.approx(20.0, rel=1e-4)  # SGD, lr 1: the step is the clipped gradient
    cfg = get_cfg()
    assert train_module._clip_norm(cfg) == 20.0
    cfg.SOLVER.CLIP_GRAD_L2NORM = 1.0  # the MViT config's value: ignored unless HONOR_CLIP_GRAD_L2NORM
    assert train_module._clip_norm(cfg) == 20.0
    cfg.SOLVER.HONOR_CLIP_GRAD_L2NORM = True
    assert train_module._clip_norm(cfg) == 1.0
