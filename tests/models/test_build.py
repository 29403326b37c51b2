"""build_model: registry, CPU / GPU placement, DDP wrapping, pretrained weights at build time."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from nightcrawler.config import load_config
from nightcrawler.models import build_model, get_card, load_weights_from_cfg, registered_models, unwrap_model
from nightcrawler.models.mvit import MViT
from nightcrawler.models.slowfast import SlowFast
from nightcrawler.models.uniformer import Uniformer
from nightcrawler.utils.distributed import job_device, prepare_model
from tests.conftest import REPO_ROOT

TINY = {
    "Uniformer": ("uniformer_tiny.yaml", Uniformer),
    "MViT": ("mvit_tiny.yaml", MViT),
    "SF": ("sf_tiny.yaml", SlowFast),
}


def _tiny_cfg(name: str, *opts):
    return load_config(str(REPO_ROOT / "configs" / "models" / TINY[name][0]), ["NUM_GPUS", 0, *opts])


def test_registry_names():
    assert registered_models() == ["MViT", "SF", "Uniformer"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_builds_bare_cpu_module_with_class_outputs(name):
    cfg = _tiny_cfg(name, "MODEL.NUM_CLASSES", 5)
    model = build_model(cfg)
    assert type(model) is TINY[name][1]
    assert unwrap_model(model) is model
    assert all(p.device.type == "cpu" for p in model.parameters())
    crop = cfg.DATA.TRAIN_CROP_SIZE
    x = torch.randn(2, 3, cfg.DATA.NUM_FRAMES, crop, crop)
    model.train()
    out = model([x])
    assert out.shape == (2, 5)
    out.sum().backward()


def test_unknown_model_name_lists_choices():
    cfg = _tiny_cfg("SF", "MODEL.MODEL_NAME", "ResNet")
    with pytest.raises(KeyError, match="'ResNet'.*MViT.*SF.*Uniformer"):
        build_model(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_gpu_request_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="NUM_GPUS is 1 but CUDA is not available"):
        job_device(1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_placement():
    model = prepare_model(build_model(_tiny_cfg("SF", "NUM_GPUS", 1)), job_device(1))
    assert next(model.parameters()).device == torch.device("cuda", torch.cuda.current_device())


def test_pretrained_name_is_an_explicit_step_after_building(tmp_path):
    torch.manual_seed(0)
    source = build_model(_tiny_cfg("SF"))
    torch.save({"model_state": source.state_dict(), "epoch": 3}, tmp_path / "sf_weights.pyth")
    cfg = _tiny_cfg("SF", "SF.PRETRAIN_NAME", "sf_weights", "MODEL.PRETRAIN_DIR", str(tmp_path))
    built = build_model(cfg)  # construction only: no file is read
    assert not torch.equal(built.slow.conv1.weight, source.slow.conv1.weight)
    assert load_weights_from_cfg(built, cfg) is not None
    for k, v in source.state_dict().items():
        assert torch.equal(built.state_dict()[k], v), k


def test_unwrap_model_strips_wrappers():
    inner = nn.Linear(2, 2)
    assert unwrap_model(nn.DataParallel(nn.DataParallel(inner))) is inner


def _ddp_worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    init_file = os.path.join(tmp, "init")
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's weights
        model = build_model(_tiny_cfg("SF", "SF.WIDTH", 8, "DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32))
        model = prepare_model(model, job_device(0), find_unused_parameters=get_card("SF").unused_parameters)
        assert isinstance(model, nn.parallel.DistributedDataParallel)
        assert model.find_unused_parameters  # SF never uses its fast res5 stage
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(2):  # a second step fails if unused parameters were not declared
            torch.manual_seed(100 * step + rank)
            loss = model(torch.randn(2, 3, 4, 32, 32)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save(unwrap_model(model).projection.weight.detach(), os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_wrap_with_unused_parameters(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(weights[0], weights[1])  # gradients were averaged, replicas stay identical


def test_single_process_group_keeps_bare_module(tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1
    )
    try:
        assert type(prepare_model(build_model(_tiny_cfg("SF")), job_device(0))) is SlowFast
    finally:
        torch.distributed.destroy_process_group()
