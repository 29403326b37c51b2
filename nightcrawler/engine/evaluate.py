"""Validation during training: top-1/top-5 on each ``TRAIN.EVAL_SPLITS`` split, 1 view x 1 centre crop.

Dark splits (``arid``, ``dark_unlabel``, ``total_unlabel``, ``test``) are decoded with gamma ``TEST.GAMMA``,
normal-light ``val_dry`` without, as the original (the data package's ``default_gamma``); videos a
``TEST.SKIP_BAD_VIDEOS`` loader marks undecodable are left out. The model runs in eval mode, FP32, without autocast.
Unlike the original (per-GPU batch averages, padded duplicates counted twice), every process's per-video
scores are gathered and each video counted once, so the numbers do not depend on the process count.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from nightcrawler.engine.metrics import confusion_matrix, topk_correct
from nightcrawler.models.build import unwrap_model
from nightcrawler.utils.distributed import all_gather_object, get_world_size

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Video-level results of one split (every process holds the same values)."""

    split: str
    top1_err: float
    top5_err: float
    num_videos: int
    num_labelled: int
    confusion: np.ndarray
    seconds: float


def build_eval_loader(cfg: CfgNode, split: str) -> Any:
    """The loader of one evaluation split: 1 view x 1 crop, ``TEST.BATCH_SIZE`` clips over all processes."""
    from nightcrawler.data import build_loader, default_gamma

    return build_loader(
        cfg,
        split,
        batch_size=max(1, cfg.TEST.BATCH_SIZE // get_world_size()),
        shuffle=False,
        drop_last=False,
        gamma=default_gamma(cfg, split),
        views=1,
        crops=1,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Any, device: torch.device | str, split: str = "", num_classes: int | None = None
) -> EvalResult:
    """Scores every video of ``loader`` (batches of ``inputs`` (B, K, 3, T, H, W), ``labels``, ``index``),
    summing its K clips, and computes top-1/top-5 error (percent, NaN without labels) and the confusion
    matrix over all processes."""
    start = time.perf_counter()
    bare = unwrap_model(model)
    was_training = bare.training
    bare.eval()
    indices, scores, labels = [], [], []
    try:
        for batch in loader:
            x = batch["inputs"]
            if x.dim() == 5:  # (B, 3, T, H, W): one clip per video
                x = x.unsqueeze(1)
            ok = torch.as_tensor(batch.get("ok", torch.ones(x.shape[0], dtype=torch.bool))).bool()
            if not ok.any():
                continue
            x = x[ok]
            b, k = x.shape[:2]
            out = bare(x.flatten(0, 1).to(device, non_blocking=True).float())
            scores.append(out.float().reshape(b, k, -1).sum(dim=1).cpu())
            labels.append(torch.as_tensor(batch["labels"]).reshape(-1).long()[ok])
            indices.append(torch.as_tensor(batch["index"]).reshape(-1).long()[ok])
    finally:
        bare.train(was_training)
    local = (
        torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
        torch.cat(scores) if scores else torch.zeros(0, num_classes or 0),
        torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
    )
    idx, s, y = _gather_unique(local)
    c = num_classes or (s.shape[1] if s.numel() else 0)
    labelled = int((y >= 0).sum())
    if labelled:
        top1, top5 = topk_correct(s, y, (1, 5))
        errs = (100.0 * (1 - top1 / labelled), 100.0 * (1 - top5 / labelled))
    else:
        errs = (math.nan, math.nan)
    cm = confusion_matrix(s, y, c) if s.numel() else np.zeros((c, c), dtype=np.int64)
    return EvalResult(split, errs[0], errs[1], int(idx.numel()), labelled, cm, time.perf_counter() - start)


def _gather_unique(local: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
    """Concatenates every process's (index, scores, labels) and keeps the first row of each index (the
    distributed sampler pads the set by repeating videos)."""
    parts = all_gather_object(local)
    idx = torch.cat([p[0] for p in parts])
    s = torch.cat([p[1] for p in parts if p[1].numel()]) if any(p[1].numel() for p in parts) else parts[0][1]
    y = torch.cat([p[2] for p in parts])
    if idx.numel() == 0:
        return idx, s, y
    order = torch.argsort(idx, stable=True)
    idx, s, y = idx[order], s[order], y[order]
    first = torch.ones_like(idx, dtype=torch.bool)
    first[1:] = idx[1:] != idx[:-1]
    return idx[first], s[first], y[first]
