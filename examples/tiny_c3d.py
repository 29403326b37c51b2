"""A model family of one's own, in one file: a small 3-D CNN registered as ``TinyC3D``.

Use it without editing Nightcrawler::

    IMPORTS: [examples/tiny_c3d.py]      # or a module name on PYTHONPATH
    MODEL:
      MODEL_NAME: TinyC3D
      NUM_CLASSES: 11

The card beside the factory tells the generic code what it needs: how to recognise the family's checkpoints,
which module is the classifier, which key names zoo weights, what inputs it accepts, and that it outputs logits.
"""

from __future__ import annotations

import torch
from torch import nn

from nightcrawler.models.registry import MODEL_REGISTRY, model_card


class TinyC3D(nn.Module):
    """Three conv-BN-ReLU stages (stride 2 in space, 1 in time), global average pool, dropout, linear."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 8, dropout: float = 0.0):
        super().__init__()
        layers, channels = [], in_chans
        for i in range(3):
            out = width * 2**i
            layers += [
                nn.Conv3d(channels, out, kernel_size=3, stride=(1, 2, 2), padding=1, bias=False),
                nn.BatchNorm3d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, (list, tuple)):  # single-pathway models may receive [clip]
            x = x[0]
        return self.classifier(self.dropout(self.features(x).mean(dim=(2, 3, 4))))


def check_tiny_c3d_config(cfg) -> None:
    """Three stride-2 stages need crops of at least 8 pixels."""
    if min(cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE) < 8:
        raise ValueError("TinyC3D needs DATA.TRAIN_CROP_SIZE and DATA.TEST_CROP_SIZE >= 8")


@MODEL_REGISTRY.register()
@model_card(
    name="TinyC3D",
    fingerprint=lambda keys: "features.0.weight" in keys and "classifier.weight" in keys,
    classifier="classifier",
    check_config=check_tiny_c3d_config,
    outputs="logits",
)
def build_tiny_c3d(cfg) -> TinyC3D:
    """Reads MODEL.NUM_CLASSES, MODEL.DROPOUT_RATE and DATA.INPUT_CHANNEL_NUM[0]."""
    return TinyC3D(cfg.MODEL.NUM_CLASSES, cfg.DATA.INPUT_CHANNEL_NUM[0], dropout=cfg.MODEL.DROPOUT_RATE)
