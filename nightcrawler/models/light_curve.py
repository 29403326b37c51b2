"""Zero-reference light-enhancement curves (the Zero-DCE family): the curve-estimation network and its losses.

A small CNN looks at a dark RGB image ``x`` in [0, 1] and predicts, per pixel and channel, the parameters ``a``
in [-1, 1] of ``iterations`` quadratic light-enhancement curves ``LE(x) = x + a * x * (1 - x)``, applied one
after the other (``a > 0`` brightens; every step keeps [0, 1] in [0, 1] and is monotonic). It is trained
without any reference image, by four non-reference losses on the enhanced image and the curve maps:

* spatial consistency: differences between neighbouring 4x4 regions of the (channel-mean) image are kept;
* exposure control: the mean of every 16x16 patch moves towards a well-exposedness level ``E`` (0.6);
* colour constancy: the channel means of the image stay equal (grey world);
* illumination smoothness: the curve maps vary smoothly (total variation).

Nothing here reads a file: ``nightcrawler.data.enhance_curve`` loads a trained network from a checkpoint and
``tools/train_enhancer.py`` trains one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

EXPOSURE_LEVEL = 0.6  # the family's well-exposedness level E
EXPOSURE_PATCH = 16  # side of the patches whose mean the exposure loss controls
SPATIAL_REGION = 4  # side of the regions whose neighbour differences the spatial loss keeps


class CurveEstimator(nn.Module):
    """Predicts ``iterations`` per-pixel RGB curve maps from an image, then applies them.

    ``depth`` 3x3 convolutions of ``channels`` channels (ReLU), the second half taking the concatenation of
    the previous output and its mirror in the first half (Zero-DCE: depth 7, 32 channels, 8 iterations,
    about 79k parameters); the last convolution gives ``3 * iterations`` maps through ``tanh``.

    Args:
        channels: width of every hidden convolution.
        depth: number of convolutions, odd and >= 3 (``(depth - 1) / 2`` skip concatenations).
        iterations: how many times the curve is applied (one RGB map per iteration).
    """

    def __init__(self, channels: int = 32, depth: int = 7, iterations: int = 8):
        super().__init__()
        if depth < 3 or depth % 2 == 0:
            raise ValueError(f"depth must be odd and >= 3, got {depth}")
        if channels < 1 or iterations < 1:
            raise ValueError(f"channels and iterations must be >= 1, got {channels} and {iterations}")
        self.channels, self.depth, self.iterations = channels, depth, iterations
        half = (depth - 1) // 2
        self.encoder = nn.ModuleList(
            nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1) for i in range(half + 1)
        )
        self.decoder = nn.ModuleList(
            nn.Conv2d(2 * channels, channels if i < half - 1 else 3 * iterations, 3, padding=1)
            for i in range(half)
        )
        for conv in (*self.encoder, *self.decoder):
            # small weights: the untrained network is close to the identity curve (a = 0)
            nn.init.normal_(conv.weight, 0.0, 0.02)
            nn.init.zeros_(conv.bias)

    def config(self) -> dict[str, int]:
        """The constructor arguments that rebuild this network (stored in its checkpoint)."""
        return {"channels": self.channels, "depth": self.depth, "iterations": self.iterations}

    def curve_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3 * iterations, H, W)`` curve parameters in [-1, 1] of images ``x`` ``(N, 3, H, W)``."""
        skips = []
        for conv in self.encoder:
            x = F.relu(conv(x))
            skips.append(x)
        skips.pop()  # the innermost output is not a skip: it is where the decoder starts
        for i, conv in enumerate(self.decoder):
            x = conv(torch.cat([skips.pop(), x], dim=1))
            x = torch.tanh(x) if i == len(self.decoder) - 1 else F.relu(x)
        return x

    def forward(self, x: torch.Tensor, scale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(enhanced images, curve maps) of images ``x`` ``(N, 3, H, W)`` in [0, 1].

        ``scale > 1`` estimates the maps on ``x`` downsampled by that factor (area) and upsamples them
        (bilinear) before applying them at full resolution, the family's fast variant (cost / scale**2).
        """
        if scale < 1:
            raise ValueError(f"scale must be a whole number >= 1, got {scale}")
        small = x if scale == 1 else F.interpolate(x, scale_factor=1.0 / scale, mode="area")
        maps = self.curve_maps(small)
        if maps.shape[-2:] != x.shape[-2:]:
            maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
        maps = maps.contiguous()  # (channels-last weights give channels-last maps) contiguous curve steps
        return apply_curves(x, maps), maps


def apply_curves(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``x`` ``(N, 3, H, W)`` in [0, 1] through ``LE(x) = x + a * x * (1 - x)`` once per RGB triple of ``maps``
    ``(N, 3 * K, H, W)``, in order."""
    steps = torch.split(maps, 3, dim=1)
    if torch.is_grad_enabled() and (x.requires_grad or maps.requires_grad):
        for a in steps:
            x = x + a * x * (1 - x)
        return x
    x, t = x.clone(), torch.empty_like(x)  # no gradient: in place, without a new tensor per step
    for a in steps:
        torch.sub(x, torch.mul(x, x, out=t), out=t).mul_(a)
        x.add_(t)
    return x


# ---------------------------------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class CurveLossWeights:
    """Weights of the four losses: those of the family's released training code (spatial 1, exposure 10,
    colour 5, smoothness 200). The paper's (1, 1, 0.5, 20) have the same ratios between the last three; the
    code's give spatial consistency a tenth of the paper's relative weight, which brightens more."""

    spatial: float = 1.0
    exposure: float = 10.0
    colour: float = 5.0
    smoothness: float = 200.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _channel_mean_regions(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.avg_pool2d(x.mean(dim=1, keepdim=True), size)


def spatial_consistency_loss(enhanced: torch.Tensor, original: torch.Tensor, region: int = SPATIAL_REGION):
    """Mean over pairs of neighbouring ``region`` x ``region`` regions (left-right and up-down) of
    ``(|Y_i - Y_j| - |I_i - I_j|)^2``, Y and I the channel-mean region averages of the enhanced and original
    images: the enhancement keeps local contrast where it was."""
    y, i = _channel_mean_regions(enhanced, region), _channel_mean_regions(original, region)
    loss = enhanced.new_zeros(())
    for dim in (-1, -2):
        if y.shape[dim] > 1:
            loss = loss + ((y.diff(dim=dim).abs() - i.diff(dim=dim).abs()) ** 2).mean()
    return loss


def exposure_loss(enhanced: torch.Tensor, level: float = EXPOSURE_LEVEL, patch: int = EXPOSURE_PATCH):
    """Mean over ``patch`` x ``patch`` patches of ``(mean - level)^2`` of the channel-mean image."""
    return ((_channel_mean_regions(enhanced, patch) - level) ** 2).mean()


def colour_constancy_loss(enhanced: torch.Tensor):
    """Mean over images of ``sum over channel pairs (p, q) of (mean_p - mean_q)^2`` (grey world)."""
    r, g, b = enhanced.mean(dim=(2, 3)).unbind(dim=1)
    return ((r - g) ** 2 + (r - b) ** 2 + (g - b) ** 2).mean()


def illumination_smoothness_loss(maps: torch.Tensor):
    """Total variation of the curve maps: mean squared horizontal plus vertical difference."""
    return (maps.diff(dim=-1) ** 2).mean() + (maps.diff(dim=-2) ** 2).mean()


def zero_reference_losses(
    original: torch.Tensor,
    enhanced: torch.Tensor,
    maps: torch.Tensor,
    weights: CurveLossWeights = CurveLossWeights(),
    exposure_level: float = EXPOSURE_LEVEL,
) -> dict[str, torch.Tensor]:
    """The four unweighted losses (``spatial``, ``exposure``, ``colour``, ``smoothness``) and their weighted
    sum ``total`` (the one to minimise)."""
    terms: dict[str, Any] = {
        "spatial": spatial_consistency_loss(enhanced, original),
        "exposure": exposure_loss(enhanced, exposure_level),
        "colour": colour_constancy_loss(enhanced),
        "smoothness": illumination_smoothness_loss(maps),
    }
    w = weights.as_dict()
    terms["total"] = sum(w[k] * v for k, v in terms.items())
    return terms
