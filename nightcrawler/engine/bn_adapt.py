"""Adapting BatchNorm statistics to dark videos ("adapt BN"): fvcore's precise-BN on unlabelled clips.

The model runs forward in train mode (stochastic depth and dropout active, as the original), without
gradients or autocast, over ``min(num_batches, len(loader))`` batches; every BatchNorm layer's running mean
and variance are replaced by the population statistics of those batches. Nothing else changes. Models
without BatchNorm (MViT) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from fvcore.nn.precise_bn import BN_MODULE_TYPES, update_bn_stats
from torch import nn
from yacs.config import CfgNode

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


# ---------------------------------------------------------------------------------------------------- standalone
def bn_source_cfg(
    cfg: CfgNode, videos: str | Path | None, video_root: str | Path | None, workdir: Path
) -> CfgNode:
    """A copy of ``cfg`` whose ``train_unlabel`` split reads ``videos`` (a folder of videos, or a video list
    with ``path,label`` rows relative to ``video_root`` / the list's folder), for the BN statistics and TENT;
    None keeps ``BN.SPLIT`` and ``TENT.SPLIT``."""
    from nightcrawler.data.csvs import VideoRow, list_videos, write_video_list

    cfg = cfg.clone()
    cfg.defrost()
    if videos is None:
        return cfg
    videos = Path(videos).resolve()
    if videos.is_dir():
        csv_path = workdir / "videos.csv"
        write_video_list(csv_path, [VideoRow(p, -1) for p in list_videos(videos)], separator=",")
        cfg.DATA.PATH_LABEL_SEPARATOR = ","
        root = videos
    elif videos.is_file():
        csv_path, root = videos, Path(video_root).resolve() if video_root else videos.parent
    else:
        raise FileNotFoundError(f"--videos: no such folder or video list: {videos}")
    cfg.DATA.PATH_PREFIX = ""
    cfg.DATA.CSV_TOTAL_UNLABEL = str(csv_path)
    cfg.DATA.ROOT_DARK = str(root)
    cfg.DATA.ROOT_FALLBACK = False
    cfg.BN.SPLIT = "train_unlabel"
    cfg.TENT.SPLIT = "train_unlabel"
    return cfg


def adapt_checkpoint(
    cfg: CfgNode,
    checkpoint: str | Path,
    output: str | Path,
    *,
    videos: str | Path | None = None,
    video_root: str | Path | None = None,
) -> dict[str, Any]:
    """Loads ``checkpoint`` into the model ``cfg`` describes, adapts its BatchNorm statistics on dark videos
    (``videos``, or the ``BN.SPLIT`` split of the config; ``BN.NUM_BATCHES_PRECISE`` batches of one training
    process's share of ``TRAIN.BATCH_SIZE`` videos, training augmentation, enhancement ``ENHANCE.BN``) and writes ``output``
    atomically: the input's content (epoch, optimiser state, ...) with the new ``model_state`` and a
    ``bn_adaptation`` record. Returns that record. Runs in one process (CPU, or GPU 0 with NUM_GPUS > 0).

    With ``TENT.ENABLE`` the BatchNorm affine parameters are then tuned by entropy minimisation
    (:mod:`nightcrawler.engine.tent`) on the same videos (``TENT.SPLIT``, or ``videos``) and the record gains a
    ``tent`` entry (steps, entropy before/after)."""
    import tempfile

    from nightcrawler.config.checks import processes_per_machine
    from nightcrawler.data import build_loader, phase_enhancement
    from nightcrawler.models import build_model
    from nightcrawler.models.checkpoint import load_pretrained, read_checkpoint, require_trained_classifier
    from nightcrawler.utils.io import atomic_torch_save
    from nightcrawler.utils.seeding import seed_everything

    with tempfile.TemporaryDirectory(prefix="nc_adapt_bn_") as tmp:
        cfg = bn_source_cfg(cfg, videos, video_root, Path(tmp))
        # the per-process batch of the training run (the original: TRAIN.BATCH_SIZE / NUM_GPUS videos)
        processes = processes_per_machine(cfg) * cfg.NUM_SHARDS
        batch_size = max(1, cfg.TRAIN.BATCH_SIZE // processes)
        cfg.NUM_GPUS = min(cfg.NUM_GPUS, 1)
        device = torch.device("cuda", 0) if cfg.NUM_GPUS else torch.device("cpu")
        seed_everything(cfg.RNG_SEED)
        model = build_model(cfg)
        report = load_pretrained(model, checkpoint, num_classes=cfg.MODEL.NUM_CLASSES, strict=True)
        require_trained_classifier(model, report)
        logger.info("adapt BN: %s", report.summary())
        model.to(device)
        enhancement = phase_enhancement(cfg, "bn")
        loader = build_loader(cfg, cfg.BN.SPLIT, enhancement=enhancement, batch_size=batch_size)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        used = adapt_bn_statistics(model, loader, cfg.BN.NUM_BATCHES_PRECISE, device)
        tent = None
        if cfg.TENT.ENABLE:  # then the affine parameters, on one process's share of TENT.BATCH_SIZE videos
            from nightcrawler.engine.tent import adapt_with_tent

            tent = adapt_with_tent(
                cfg, model, device, batch_size=max(1, cfg.TENT.BATCH_SIZE // processes)
            ).as_dict()
        after = model.state_dict()
        changed = sorted(k for k in after if not torch.equal(before[k], after[k]))
        record = {
            "source_checkpoint": str(checkpoint),
            "videos": str(videos) if videos is not None else f"split {cfg.BN.SPLIT}",
            "num_videos": len(loader.dataset),
            "batches": used,
            "enhancement": enhancement.spec,
            "bn_layers": len(bn_layers(model)),
            "changed_tensors": len(changed),
        }
        if tent is not None:
            record["tent"] = tent
    original = read_checkpoint(checkpoint)
    out = dict(original) if isinstance(original, dict) and "model_state" in original else {"epoch": -1}
    out["model_state"] = {k: v.cpu() for k, v in after.items()}
    out.setdefault("cfg", cfg.dump())
    out["bn_adaptation"] = record
    atomic_torch_save(out, output)
    logger.info("adapt BN: wrote %s (%s)", output, record)
    return record
