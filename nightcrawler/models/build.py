"""Model registry and ``build_model(cfg)``: the one place where the config turns into a network."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from fvcore.common.registry import Registry
from torch import nn

from nightcrawler.models.mvit import mvit_from_cfg
from nightcrawler.models.slowfast import sf_from_cfg
from nightcrawler.models.uniformer import uniformer_from_cfg

logger = logging.getLogger(__name__)

MODEL_REGISTRY = Registry("MODEL")
MODEL_REGISTRY.__doc__ = "Model factories ``f(cfg) -> nn.Module``, keyed by ``MODEL.MODEL_NAME``."

# Models whose forward leaves parameters without gradient (SF discards its fast res5 stage, as the original).
MODELS_WITH_UNUSED_PARAMETERS = {"SF"}


def _register(name: str, factory: Callable[..., nn.Module]) -> None:
    def build(cfg) -> nn.Module:
        return factory(cfg)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = factory.__doc__
    MODEL_REGISTRY.register(build)


_register("Uniformer", uniformer_from_cfg)
_register("MViT", mvit_from_cfg)
_register("SF", sf_from_cfg)


def registered_models() -> list[str]:
    """The accepted ``MODEL.MODEL_NAME`` values."""
    return sorted(name for name, _ in MODEL_REGISTRY)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def build_model(cfg, *, pretrained: bool = True) -> nn.Module:
    """Builds ``MODEL.MODEL_NAME`` from ``cfg``.

    With ``pretrained`` the weights named by ``UNIFORMER.PRETRAIN_NAME`` / ``SF.PRETRAIN_NAME`` are loaded
    (see :func:`nightcrawler.models.checkpoint.load_weights_from_cfg`; "None" or "" skips). With
    ``NUM_GPUS: 0`` the bare module stays on the CPU; otherwise it moves to the current CUDA device. When
    torch.distributed runs more than one process the model is wrapped in DistributedDataParallel.
    """
    name = cfg.MODEL.MODEL_NAME
    if name not in MODEL_REGISTRY:
        raise KeyError(
            f"MODEL.MODEL_NAME {name!r} is not a registered model; choose one of {registered_models()}"
        )
    model = MODEL_REGISTRY.get(name)(cfg)
    if pretrained:
        from nightcrawler.models.checkpoint import load_weights_from_cfg

        load_weights_from_cfg(model, cfg)

    if cfg.NUM_GPUS > 0:
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"NUM_GPUS is {cfg.NUM_GPUS} but CUDA is not available; set NUM_GPUS 0 for the CPU"
            )
        if cfg.NUM_GPUS > torch.cuda.device_count():
            raise RuntimeError(
                f"NUM_GPUS is {cfg.NUM_GPUS} but only {torch.cuda.device_count()} GPUs are visible"
            )
        device = torch.device("cuda", torch.cuda.current_device())
        model = model.to(device)
    else:
        device = torch.device("cpu")

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_world_size() > 1:
            model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                output_device=device.index if device.type == "cuda" else None,
                find_unused_parameters=name in MODELS_WITH_UNUSED_PARAMETERS,
            )
    return model
