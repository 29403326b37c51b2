"""Parameter groups (weight decay) and the per-iteration learning-rate schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nightcrawler.config import get_cfg, load_config
from nightcrawler.engine.optim import LrSchedule, build_optimizer, param_groups, set_lr
from nightcrawler.models import build_model
from tests.conftest import REPO_ROOT


def _spec_cfg(max_epoch: int = 20):
    """The experiments' schedule (spec 6.3): B = 1e-4, s = f = 1e-6, W = 10, cosine after warm-up."""
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WARMUP_START_LR = 1e-6
    cfg.SOLVER.COSINE_END_LR = 1e-6
    cfg.SOLVER.WARMUP_EPOCHS = 10.0
    cfg.SOLVER.COSINE_AFTER_WARMUP = True
    cfg.SOLVER.MAX_EPOCH = max_epoch
    cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS = True
    return cfg


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 1.0e-6), (1, 1.09e-5), (5, 5.05e-5), (10, 1.0e-4), (15, 5.05e-5), (20, 1.0e-6)],
)
def test_spec_examples_m20(epoch, expected):
    assert LrSchedule.from_cfg(_spec_cfg(20)).lr_at(epoch) == pytest.approx(expected, rel=1e-9)


def test_cosine_midpoint_moves_with_max_epoch():
    mid = (1e-4 + 1e-6) / 2
    assert LrSchedule.from_cfg(_spec_cfg(30)).lr_at(20) == pytest.approx(mid, rel=1e-12)
    assert LrSchedule.from_cfg(_spec_cfg(40)).lr_at(25) == pytest.approx(mid, rel=1e-12)


def test_fractional_epochs_follow_the_formulas():
    s = LrSchedule.from_cfg(_spec_cfg(20))
    # iteration 46 of 92 in epoch 3 -> e = 3.5, warm-up line
    assert s.lr_at(3 + 46 / 92) == pytest.approx(1e-6 + 3.5 * (1e-4 - 1e-6) / 10, rel=1e-12)
    # e = 12.25 on the cosine
    e = 12.25
    expected = 1e-6 + (1e-4 - 1e-6) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * (e - 10) / 10)).item())
    assert s.lr_at(e) == pytest.approx(expected, rel=1e-6)


def test_num_shards_scale_all_three_rates():
    cfg = _spec_cfg(20)
    cfg.NUM_SHARDS = 2
    s = LrSchedule.from_cfg(cfg)
    assert (
        s.lr_at(0) == pytest.approx(2e-6)
        and s.lr_at(10) == pytest.approx(2e-4)
        and s.lr_at(20) == pytest.approx(2e-6)
    )
    cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS = False
    assert LrSchedule.from_cfg(cfg).lr_at(10) == pytest.approx(1e-4)


def test_cosine_without_after_warmup_warms_up_to_the_cosine_value():
    cfg = _spec_cfg(20)
    cfg.SOLVER.COSINE_AFTER_WARMUP = False
    s = LrSchedule.from_cfg(cfg)
    at_w = 1e-6 + (1e-4 - 1e-6) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 10 / 20)).item())
    assert s.lr_at(10) == pytest.approx(at_w, rel=1e-6)
    assert s.lr_at(5) == pytest.approx(1e-6 + 5 * (at_w - 1e-6) / 10, rel=1e-6)


def test_steps_with_relative_lrs():
    cfg = get_cfg()
    cfg.SOLVER.LR_POLICY = "steps_with_relative_lrs"
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.STEPS = [0, 4, 8]
    cfg.SOLVER.LRS = [1, 0.1, 0.01]
    cfg.SOLVER.MAX_EPOCH = 10
    cfg.SOLVER.WARMUP_EPOCHS = 0.0
    s = LrSchedule.from_cfg(cfg)
    assert [s.lr_at(e) for e in (0, 3.9, 4, 7.5, 8, 9.9)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3)
        self.bn = nn.BatchNorm3d(4)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_param_groups_split_bn_1d_and_the_rest():
    m = _Toy()
    groups = {
        g["name"]: g for g in param_groups(m, 0.03, 0.0, zero_wd_1d=True, skip_names=m.no_weight_decay())
    }
    assert _names(m, groups["bn"]) == {"bn.weight", "bn.bias"} and groups["bn"]["weight_decay"] == 0.0
    assert _names(m, groups["no_decay"]) == {"conv.bias", "norm.weight", "norm.bias", "fc.bias", "pos_embed"}
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert (
        _names(m, groups["decay"]) == {"conv.weight", "fc.weight"} and groups["decay"]["weight_decay"] == 0.03
    )
    # the frozen parameter is in no group
    assert sum(len(g["params"]) for g in groups.values()) == len(
        [p for p in m.parameters() if p.requires_grad]
    )


def test_without_zero_wd_1d_only_bn_and_listed_names_are_exempt():
    m = _Toy()
    groups = {g["name"]: g for g in param_groups(m, 0.1, 0.5, zero_wd_1d=False, skip_names={"pos_embed"})}
    assert groups["bn"]["weight_decay"] == 0.5
    assert _names(m, groups["no_decay"]) == {"pos_embed"}
    assert "fc.bias" in _names(m, groups["decay"])


def _tiny(name: str, *opts):
    return load_config(
        str(REPO_ROOT / "configs" / "models" / name), ["NUM_GPUS", 0, "MODEL.NUM_CLASSES", 3, *opts]
    )


def test_uniformer_optimizer_gives_every_1d_parameter_zero_decay():
    cfg = _tiny(
        "uniformer_tiny.yaml",
        *("UNIFORMER.EMBED_DIM", [8, 16, 32, 32], "UNIFORMER.DEPTH", [1, 1, 1, 1], "UNIFORMER.HEAD_DIM", 8),
        *("SOLVER.OPTIMIZING_METHOD", "adamw", "SOLVER.WEIGHT_DECAY", 0.03, "SOLVER.ZERO_WD_1D_PARAM", True),
    )
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay_of) == sum(1 for p in model.parameters() if p.requires_grad)
    for name, p in model.named_parameters():
        expected = 0.0 if p.ndim <= 1 else 0.03
        assert decay_of[id(p)] == expected, name
    # BN parameters exist and sit in the BN group
    bn_group = next(g for g in opt.param_groups if g["name"] == "bn")
    assert len(bn_group["params"]) == 2 * sum(isinstance(m, nn.BatchNorm3d) for m in model.modules())


@pytest.mark.parametrize("zero_pos", [True, False])
def test_mvit_position_embeddings_follow_zero_decay_pos_cls(zero_pos):
    cfg = _tiny("mvit_tiny.yaml", "MVIT.ZERO_DECAY_POS_CLS", zero_pos, "SOLVER.WEIGHT_DECAY", 0.1)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    top_level = dict(model.named_parameters(recurse=False))
    assert top_level, "the MViT model should have position embeddings / class token"
    for name, p in top_level.items():
        assert decay_of[id(p)] == (0.0 if zero_pos else 0.1), name


def test_sgd_and_set_lr():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZING_METHOD = "sgd"
    cfg.SOLVER.WARMUP_EPOCHS = 2.0
    cfg.SOLVER.WARMUP_START_LR = 0.01
    opt = build_optimizer(cfg, _Toy())
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["nesterov"] is True and opt.defaults["momentum"] == 0.9
    assert all(g["lr"] == pytest.approx(0.01) for g in opt.param_groups)
    set_lr(opt, 0.5)
    assert all(g["lr"] == 0.5 for g in opt.param_groups)
