"""An ``IMPORTS`` module for the fault tests: registers ``FailsOnRank1``, a tiny video classifier whose forward
raises on global rank 1 only (rank 0 then waits in a collective that never completes)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from nightcrawler.models.registry import MODEL_REGISTRY, model_card

FAILURE_MESSAGE = "injected failure on rank 1"


class FailsOnRank1(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, kernel_size=3, stride=(1, 4, 4), padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, (list, tuple)):
            x = x[0]
        if dist.is_initialized() and dist.get_rank() == 1:
            raise RuntimeError(FAILURE_MESSAGE)
        return self.head(self.conv(x).mean(dim=(2, 3, 4)))


@MODEL_REGISTRY.register()
@model_card(
    name="FailsOnRank1",
    fingerprint=lambda keys: "conv.weight" in keys and "head.weight" in keys,
    classifier="head",
    outputs="logits",
)
def build_fails_on_rank1(cfg) -> FailsOnRank1:
    return FailsOnRank1(cfg.MODEL.NUM_CLASSES)
