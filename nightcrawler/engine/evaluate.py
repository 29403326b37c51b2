"""Validation during training: top-1/top-5 on each ``TRAIN.EVAL_SPLITS`` split, 1 view x 1 centre crop.

Clips go through the one scorer (:func:`nightcrawler.engine.scoring.score_split`, FP32), each split with the
enhancement of phase ``eval`` (``ENHANCE.EVAL``: the dark splits, as the original); videos a
``TEST.SKIP_BAD_VIDEOS`` loader marks undecodable are left out. Unlike the original (per-GPU batch averages,
padded duplicates counted twice), every process's per-video scores are gathered and each video counted once,
so the numbers do not depend on the process count.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from nightcrawler.engine.metrics import confusion_matrix, topk_correct
from nightcrawler.engine.scoring import score_split
from nightcrawler.utils.distributed import get_world_size

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
    from nightcrawler.data import build_loader, phase_enhancement

    return build_loader(
        cfg,
        split,
        batch_size=max(1, cfg.TEST.BATCH_SIZE // get_world_size()),
        shuffle=False,
        drop_last=False,
        enhancement=phase_enhancement(cfg, "eval", split),
        views=1,
        crops=1,
    )


def evaluate(
    model: nn.Module, loader: Any, device: torch.device | str, split: str = "", num_classes: int | None = None
) -> EvalResult:
    """Scores every video of ``loader`` (summing its clips) and computes top-1/top-5 error (percent, NaN
    without labels) and the confusion matrix over all processes."""
    scores = score_split(
        model, loader, torch.device(device), split=split, progress=False, require_videos=False
    )
    s = scores.clip_outputs.sum(dim=1)
    y = torch.from_numpy(scores.labels)
    c = num_classes or (s.shape[1] if s.numel() else 0)
    labelled = int((y >= 0).sum())
    if labelled:
        top1, top5 = topk_correct(s, y, (1, 5))
        errs = (100.0 * (1 - top1 / labelled), 100.0 * (1 - top5 / labelled))
    else:
        errs = (math.nan, math.nan)
    cm = confusion_matrix(s, y, c) if s.numel() else np.zeros((c, c), dtype=np.int64)
    return EvalResult(split, errs[0], errs[1], len(scores.names), labelled, cm, scores.seconds)
