"""Adapting BatchNorm statistics to dark videos ("adapt BN"): fvcore's precise-BN on unlabelled clips.

The model runs forward in train mode (stochastic depth and dropout active, as the original), without
gradients or autocast, over ``min(num_batches, len(loader))`` batches; every BatchNorm layer's running mean
and variance are replaced by the population statistics of those batches. Nothing else changes. Models
without BatchNorm (MViT) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from fvcore.nn.precise_bn import BN_MODULE_TYPES, update_bn_stats
from torch import nn

from nightcrawler.models.build import unwrap_model
from nightcrawler.utils.distributed import get_world_size, is_dist

logger = logging.getLogger(__name__)


def bn_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm-family module of ``model`` (fvcore's list of types)."""
    return [m for m in unwrap_model(model).modules() if isinstance(m, BN_MODULE_TYPES)]


def _inputs(loader: Iterable[Any], device: torch.device) -> Iterator[torch.Tensor]:
    for batch in loader:
        if isinstance(batch, dict):
            x = batch["inputs"]
        elif isinstance(batch, (list, tuple)):
            x = batch[0]
        else:
            x = batch
        yield x.to(device, non_blocking=True).float()


def _share_statistics(layers: list[nn.Module], pool: bool) -> None:
    """Makes every process hold the same statistics: rank 0's (``pool`` False: what the original saves) or
    the statistics of all processes' batches pooled (``pool`` True)."""
    if not is_dist() or get_world_size() == 1:
        return
    means = torch.cat([m.running_mean.reshape(-1) for m in layers])
    variances = torch.cat([m.running_var.reshape(-1) for m in layers])
    if pool:
        both = torch.cat([means, variances + means.square()]).double()
        dist.all_reduce(both)
        both /= get_world_size()
        means, second = both.chunk(2)
        variances = second - means.square()
    else:
        both = torch.cat([means, variances])
        dist.broadcast(both, src=0)
        means, variances = both.chunk(2)
    offset = 0
    for m in layers:
        k = m.running_mean.numel()
        m.running_mean.copy_(means[offset : offset + k].view_as(m.running_mean))
        m.running_var.copy_(variances[offset : offset + k].view_as(m.running_var))
        offset += k


@torch.no_grad()
def adapt_bn_statistics(
    model: nn.Module,
    loader: Iterable[Any],
    num_batches: int,
    device: torch.device | str = "cpu",
    *,
    pool_processes: bool = False,
) -> int:
    """Re-estimates the BatchNorm running statistics of ``model`` on ``loader``'s clips.

    Batches may be the loader's dicts (``inputs``), ``(inputs, ...)`` tuples or bare tensors. Returns the
    number of batches used (0 when the model has no BatchNorm layer).
    """
    bare = unwrap_model(model)
    layers = bn_layers(bare)
    if not layers:
        logger.info("adapt BN: %s has no BatchNorm layer, nothing to adapt", type(bare).__name__)
        return 0
    try:
        available = len(loader)  # type: ignore[arg-type]
    except TypeError:
        available = num_batches
    n = min(num_batches, available)
    if n <= 0:
        raise ValueError(
            f"adapt BN: the loader has {available} batches (BN.NUM_BATCHES_PRECISE = {num_batches}); "
            "the BN split needs at least one full batch"
        )
    was_training = bare.training
    # fvcore assigns new tensors to the buffers; copy them back into the original ones so that references
    # held elsewhere (DistributedDataParallel's buffer broadcast) stay valid.
    originals = [(m.running_mean, m.running_var) for m in layers]
    bare.train()
    try:
        update_bn_stats(bare, _inputs(loader, torch.device(device)), num_iters=n)
    finally:
        bare.train(was_training)
        for m, (mean, var) in zip(layers, originals):
            if m.running_mean is not mean:
                mean.copy_(m.running_mean)
                var.copy_(m.running_var)
                m.running_mean, m.running_var = mean, var
    _share_statistics(layers, pool_processes)
    logger.info("adapt BN: %d BatchNorm layers re-estimated on %d batches", len(layers), n)
    return n
