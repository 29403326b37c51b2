"""``build_model(cfg)``: the one place where the config turns into a network (construction only).

Loading zoo weights (:func:`nightcrawler.models.checkpoint.load_weights_from_cfg`), moving to a device and
wrapping in DistributedDataParallel (:func:`nightcrawler.utils.distributed.prepare_model`) are the engine's
explicit steps.
"""

from __future__ import annotations

from torch import nn

# importing the model files registers their factories
from nightcrawler.models import mvit, slowfast, uniformer  # noqa: F401
from nightcrawler.models.registry import MODEL_REGISTRY, get_card, get_factory, registered_models

__all__ = ["MODEL_REGISTRY", "build_model", "get_card", "registered_models", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def build_model(cfg) -> nn.Module:
    """Constructs ``MODEL.MODEL_NAME`` from ``cfg`` on the CPU, with its initial (random) weights."""
    model = get_factory(cfg.MODEL.MODEL_NAME)(cfg)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"the factory of {cfg.MODEL.MODEL_NAME} returned {type(model).__name__}, not a nn.Module"
        )
    return model
