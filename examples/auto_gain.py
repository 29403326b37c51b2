"""An enhancement of one's own, in one file: ``autogain``, a clip-level brightness gain.

Not pointwise (the gain depends on the clip), so it implements ``__call__`` rather than a look-up table::

    IMPORTS: [examples/auto_gain.py]
    ENHANCE:
      TEST: "autogain:target=0.4,max_gain=8"
      BN: autogain
"""

from __future__ import annotations

import torch

from nightcrawler.data.enhance import ENHANCEMENT_REGISTRY, Enhancement, check_frames


@ENHANCEMENT_REGISTRY.register()
class AutoGain(Enhancement):
    """Multiplies every frame by ``min(max_gain, target / mean)``, where ``mean`` is the clip's mean brightness
    in [0, 1], clipping at 255 (a dark clip is brought to ``target`` on average; a bright one is left alone)."""

    spec_name = "autogain"

    def __init__(self, target: float = 0.4, max_gain: float = 8.0):
        if not (0 < target <= 1 and max_gain >= 1):
            raise ValueError(f"autogain needs 0 < target <= 1 and max_gain >= 1, got {target}, {max_gain}")
        self.target = float(target)
        self.max_gain = float(max_gain)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        check_frames(frames)
        mean = frames.float().mean() / 255.0
        gain = min(self.max_gain, max(1.0, self.target / max(float(mean), 1e-6)))
        return (frames.float() * gain).round_().clamp_(0, 255).to(torch.uint8)
