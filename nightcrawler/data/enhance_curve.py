"""The ``learned_curve`` enhancement: a trained Zero-DCE-style curve estimator (``nightcrawler.models.light_curve``)
loaded from its checkpoint, as a registered :class:`~nightcrawler.data.enhance.Enhancement`.

Spec: ``learned_curve:checkpoint=PATH[,scale=S]``; ``tools/train_enhancer.py`` writes the checkpoint. Imported by
``nightcrawler.data.enhance`` (so registered whenever enhancements are); the network's module is imported only
when one is built.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from nightcrawler.data.enhance import ENHANCEMENT_REGISTRY, Enhancement, check_frames

CHECKPOINT_KIND = "light_curve"  # the checkpoint's "kind": what tools/train_enhancer.py writes
MAX_CHUNK_PIXELS = 1 << 19  # frames per forward pass bounded by pixels: about 0.3 GB of activations


def curve_checkpoint(model: torch.nn.Module, **info: Any) -> dict[str, Any]:
    """The checkpoint of a trained :class:`~nightcrawler.models.light_curve.CurveEstimator`: its weights, the
    constructor arguments that rebuild it and ``info`` (plain values: training settings, final losses)."""
    return {"kind": CHECKPOINT_KIND, "model_args": model.config(), "model_state": model.state_dict(), **info}


def load_curve_estimator(path: str | os.PathLike):
    """The :class:`~nightcrawler.models.light_curve.CurveEstimator` of a checkpoint, in eval mode on the CPU.

    Raises :class:`~nightcrawler.models.checkpoint.CheckpointError` naming the file when it is missing,
    unreadable (``torch.load(weights_only=True)``), not a curve-estimator checkpoint, or does not fit.
    """
    from nightcrawler.models.checkpoint import CheckpointError, read_checkpoint
    from nightcrawler.models.light_curve import CurveEstimator

    obj = read_checkpoint(path)
    hint = "tools/train_enhancer.py writes learned_curve checkpoints"
    if not isinstance(obj, dict) or obj.get("kind") != CHECKPOINT_KIND:
        found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a learned_curve checkpoint (found {found}); {hint}")
    args, state = obj.get("model_args"), obj.get("model_state")
    if not isinstance(args, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: learned_curve checkpoint without model_args / model_state; {hint}")
    try:
        model = CurveEstimator(**args)
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the curve estimator does not fit its checkpoint ({exc})") from exc
    # channels-last weights: oneDNN's faster convolution layout on the CPU (same results)
    return model.eval().requires_grad_(False).to(memory_format=torch.channels_last)


@ENHANCEMENT_REGISTRY.register()
class LearnedCurve(Enhancement):
    """Zero-DCE-style learned curves: a trained curve estimator predicts per-pixel quadratic curves
    ``LE(x) = x + a * x * (1 - x)`` (applied ``iterations`` times) for each frame, trained without references on
    unlabelled dark frames (``tools/train_enhancer.py``).

    ``checkpoint``: the trained network's file (loaded when built, so a wrong path fails at config load).
    ``scale``: estimate the curve maps on frames downsampled by this factor and upsample them, the family's
    fast variant (the maps are smooth: on a synthetic dark clip the output moves by about 3 of 255 levels on
    average at scale 2, 7 at scale 4). Runs on the CPU under ``torch.inference_mode``, frames in chunks of at
    most ``MAX_CHUNK_PIXELS`` pixels. Not pointwise: the test path runs it once on the decoded union of a
    video's views.

    Cost: about 80k multiply-adds per pixel for the network, divided by ``scale**2``, plus the curves at full
    resolution: per 32x224x224 clip on two (shared) CPU cores about 7 s at scale 1, 2 s at scale 2, 0.7 s at
    scale 4. The checkpoint path goes into the spec as is, so it cannot hold a comma.
    """

    spec_name = "learned_curve"

    def __init__(self, checkpoint: str, scale: int = 1):
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a whole number >= 1, got {scale!r}")
        if not isinstance(checkpoint, str | os.PathLike) or not str(checkpoint).strip():
            raise ValueError(f"checkpoint must be a file path, got {checkpoint!r}")
        self.checkpoint = str(checkpoint)
        self.scale = scale
        self.model = load_curve_estimator(self.checkpoint)

    def tag(self) -> str:
        # the path itself can be long: its stem plus a short hash of the spec's path keeps tags unique
        digest = hashlib.sha1(self.checkpoint.encode()).hexdigest()[:6]
        scale = f"-s{self.scale}" if self.scale != 1 else ""
        return f"curve-{Path(self.checkpoint).stem}-{digest}{scale}"

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        check_frames(frames)
        out = torch.empty_like(frames)
        t, h, w = frames.shape[:3]
        chunk = max(1, MAX_CHUNK_PIXELS // max(1, h * w))
        with torch.inference_mode():
            for start in range(0, t, chunk):
                x = frames[start : start + chunk].permute(0, 3, 1, 2)
                x = x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
                enhanced, _ = self.model(x, self.scale)
                out[start : start + chunk] = enhanced.mul_(255.0).round_().clamp_(0, 255).permute(0, 2, 3, 1)
        return out
