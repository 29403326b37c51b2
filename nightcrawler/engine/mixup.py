"""Mixup / CutMix of video clip batches through timm, cutting the spatial dimensions.

timm's batch-mode Mixup pastes the CutMix box into dims 2-3 of its input, which for an ``(N, C, T, H, W)``
clip batch would be time and height. :class:`VideoMixup` hands timm an ``(N, C*T, H, W)`` view of the same
storage, so the box spans H and W and is identical on every frame and channel (the original's behaviour).
One draw per batch from NumPy's global RNG, partner of clip ``j`` is clip ``N-1-j``, lambda corrected to the
clipped box area, label smoothing on the targets.
"""

from __future__ import annotations

import torch
from timm.data.mixup import Mixup, mixup_target
from yacs.config import CfgNode


def smooth_targets(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """``(1 - smoothing) * p + smoothing / C`` on probability rows (the same smoothing timm applies)."""
    return targets * (1.0 - smoothing) + smoothing / targets.shape[-1]


class VideoMixup:
    """Batch-level Mixup/CutMix for ``(N, C, T, H, W)`` clips with hard or soft targets."""

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ) -> None:
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("MIXUP.ALPHA or MIXUP.CUTMIX_ALPHA must be > 0 when MIXUP.ENABLE is True")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self._timm = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            switch_prob=switch_prob,
            mode="batch",
            correct_lam=True,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> VideoMixup | None:
        """The mixer ``MIXUP.*`` describes, or None when ``MIXUP.ENABLE`` is False."""
        if not cfg.MIXUP.ENABLE:
            return None
        return cls(
            num_classes=cfg.MODEL.NUM_CLASSES,
            mixup_alpha=cfg.MIXUP.ALPHA,
            cutmix_alpha=cfg.MIXUP.CUTMIX_ALPHA,
            prob=cfg.MIXUP.PROB,
            switch_prob=cfg.MIXUP.SWITCH_PROB,
            label_smoothing=cfg.MIXUP.LABEL_SMOOTH_VALUE,
        )

    def mix_clips(self, clips: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Mixes ``clips`` (N, C, T, H, W) with their batch-reversed partners; returns (mixed, lambda)."""
        if clips.dim() != 5:
            raise ValueError(f"expected clips of shape (N, C, T, H, W), got {tuple(clips.shape)}")
        n, c, t, h, w = clips.shape
        if n % 2:
            raise ValueError(f"Mixup/CutMix needs an even number of clips per batch, got {n}")
        flat = clips.contiguous().view(n, c * t, h, w)
        lam = float(self._timm._mix_batch(flat))  # in place on ``flat``; cuts dims 2-3 = H, W
        return flat.view(n, c, t, h, w), lam

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed clips and their smoothed, mixed targets (N, num_classes) from hard ``labels`` (N,)."""
        mixed, lam = self.mix_clips(clips)
        targets = mixup_target(labels, self.num_classes, lam, self.label_smoothing)
        return mixed, targets

    def mix_soft(self, clips: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``__call__`` but with probability targets (N, num_classes), smoothed then mixed."""
        mixed, lam = self.mix_clips(clips)
        y = smooth_targets(probs.float(), self.label_smoothing)
        return mixed, y * lam + y.flip(0) * (1.0 - lam)
