"""SlowFast ResNet in the AlphAction layout (the original's ``SF`` model).

One input clip of T frames feeds both pathways: the fast pathway sees all T frames, the slow pathway
frames 0, 4, 8, ... (T/4 frames, chosen inside the model). Four lateral Conv3d layers (kernel 5x1x1,
temporal stride 4) carry fast features into the slow pathway, where they are concatenated on the channel
axis before slow res2..res5. The classifier averages the slow res5 output over (T, H, W) and applies
Dropout and a Linear layer. The fast res5 stage is computed and discarded, as in the original, so its
parameters never receive gradients (DDP needs ``find_unused_parameters=True``).

Module and parameter names reproduce the original's ``state_dict`` exactly (``slow.res_nl3.res_0.btnk.
conv1.conv.weight``, ``fast.Tconv2.conv.bias``, ``projection.weight``...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nightcrawler.models.registry import MODEL_REGISTRY, model_card

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
SLOW_FRAME_STRIDE = 4  # slow pathway takes every 4th frame; the laterals use the same temporal stride
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm3d with fixed statistics and affine terms, all stored as buffers.

    Has the state_dict keys of ``nn.BatchNorm3d`` except ``num_batches_tracked``, which is silently
    dropped when a checkpoint of a trainable BatchNorm is loaded.
    """

    def __init__(self, num_features: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def make_bn(num_features: int, frozen: bool) -> nn.Module:
    """A trainable ``BatchNorm3d`` (eps 1e-5, momentum 0.1) or a ``FrozenBatchNorm3d``."""
    if frozen:
        return FrozenBatchNorm3d(num_features)
    return nn.BatchNorm3d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)


class Conv3dBN(nn.Module):
    """Bias-free Conv3d followed by BatchNorm (keys ``conv.*``, ``bn.*``)."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[int, int, int] = (0, 0, 0),
        dilation: tuple[int, int, int] = (1, 1, 1),
        frozen_bn: bool = False,
        zero_init_bn: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, kernel, stride, padding, dilation, bias=False)
        self.bn = make_bn(dim_out, frozen_bn)
        nn.init.kaiming_normal_(self.conv.weight)
        if zero_init_bn and not frozen_bn:
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Bottleneck(nn.Module):
    """1x1 (optionally 3x1x1 temporal) -> 1x3x3 (strided, dilated) -> 1x1 convolutions with BN."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        dim_inner: int,
        stride: int,
        dilation: int,
        temporal_conv: bool,
        frozen_bn: bool,
    ) -> None:
        super().__init__()
        kt = 3 if temporal_conv else 1
        self.conv1 = Conv3dBN(dim_in, dim_inner, (kt, 1, 1), padding=(kt // 2, 0, 0), frozen_bn=frozen_bn)
        self.conv2 = Conv3dBN(
            dim_inner,
            dim_inner,
            (1, 3, 3),
            stride=(1, stride, stride),
            padding=(0, dilation, dilation),
            dilation=(1, dilation, dilation),
            frozen_bn=frozen_bn,
        )
        # The residual branch's last BN starts at 0, so every block starts as the identity.
        self.conv3 = Conv3dBN(dim_inner, dim_out, (1, 1, 1), frozen_bn=frozen_bn, zero_init_bn=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.conv3(x)


class ResBlock(nn.Module):
    """Bottleneck plus identity or projection shortcut, then ReLU (keys ``btnk.*``, ``shortcut.*``)."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        dim_inner: int,
        stride: int,
        dilation: int,
        temporal_conv: bool,
        with_shortcut: bool,
        frozen_bn: bool,
    ) -> None:
        super().__init__()
        self.btnk = Bottleneck(dim_in, dim_out, dim_inner, stride, dilation, temporal_conv, frozen_bn)
        self.shortcut = (
            Conv3dBN(dim_in, dim_out, (1, 1, 1), stride=(1, stride, stride), frozen_bn=frozen_bn)
            if with_shortcut
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.btnk(x) + residual)


class ResStage(nn.Sequential):
    """``num_blocks`` ResBlocks named ``res_0``, ``res_1``, ...; only the first one may stride."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        dim_inner: int,
        num_blocks: int,
        stride: int,
        dilation: int,
        temporal_conv: bool,
        frozen_bn: bool,
    ) -> None:
        super().__init__()
        for idx in range(num_blocks):
            block_in = dim_in if idx == 0 else dim_out
            block_stride = stride if idx == 0 else 1
            # A dilated stage keeps the first block's projection shortcut: the pretrained (ImageNet-style)
            # weights have it because that block strides there.
            with_shortcut = block_in != dim_out or block_stride != 1 or (idx == 0 and dilation != 1)
            block = ResBlock(
                block_in,
                dim_out,
                dim_inner,
                block_stride,
                dilation,
                temporal_conv,
                with_shortcut,
                frozen_bn,
            )
            self.add_module(f"res_{idx}", block)


class Lateral(nn.Module):
    """Fast -> slow connection: Conv3d(c, 2c, kernel (5,1,1), temporal stride 4, with bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            channels, 2 * channels, (5, 1, 1), stride=(SLOW_FRAME_STRIDE, 1, 1), padding=(2, 0, 0), bias=True
        )
        nn.init.kaiming_normal_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Pathway(nn.Module):
    """Stem (conv1, bn1, ReLU, 1x3x3 max-pool) and four ResNet stages ``res_nl1..res_nl4``.

    ``lateral_in`` widens the input of every stage by the channels concatenated from the other pathway.
    """

    def __init__(
        self,
        width: int,
        blocks: Sequence[int],
        stem_temporal_kernel: int,
        temporal_stages: Sequence[bool],
        frozen_bn: bool,
        lateral_in: Sequence[int] = (0, 0, 0, 0),
    ) -> None:
        super().__init__()
        self.dims = [width, 4 * width, 8 * width, 16 * width, 32 * width]
        kt = stem_temporal_kernel
        self.conv1 = nn.Conv3d(3, self.dims[0], (kt, 7, 7), (1, 2, 2), (kt // 2, 3, 3), bias=False)
        nn.init.kaiming_normal_(self.conv1.weight)
        self.bn1 = make_bn(self.dims[0], frozen_bn)
        self.maxpool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2))
        strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)  # res5 keeps the resolution and dilates instead
        for i in range(4):
            stage = ResStage(
                self.dims[i] + lateral_in[i],
                self.dims[i + 1],
                width * 2**i,
                blocks[i],
                strides[i],
                dilations[i],
                temporal_stages[i],
                frozen_bn,
            )
            self.add_module(f"res_nl{i + 1}", stage)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool1(F.relu(self.bn1(self.conv1(x))))

    def stage(self, i: int) -> nn.Module:
        return getattr(self, f"res_nl{i + 1}")


class FastPathway(_Pathway):
    """All frames; also owns the lateral convolutions ``Tconv1..Tconv4`` feeding the slow pathway."""

    def __init__(self, width: int, blocks: Sequence[int], frozen_bn: bool) -> None:
        super().__init__(width, blocks, 5, (True, True, True, True), frozen_bn)
        for i in range(4):
            self.add_module(f"Tconv{i + 1}", Lateral(self.dims[i]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The res5 output and the four lateral tensors (taken before res2, res3, res4, res5)."""
        x = self.stem(x)
        laterals = []
        for i in range(4):
            laterals.append(getattr(self, f"Tconv{i + 1}")(x))
            x = self.stage(i)(x)
        return x, laterals


class SlowPathway(_Pathway):
    """Every 4th frame; each stage's input is concatenated with the fast pathway's lateral tensor."""

    def __init__(self, width: int, blocks: Sequence[int], frozen_bn: bool) -> None:
        fast_width = width // 8
        lateral_in = [2 * fast_width * m for m in (1, 4, 8, 16)]
        super().__init__(width, blocks, 1, (False, False, True, True), frozen_bn, lateral_in)

    def forward(self, x: torch.Tensor, laterals: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.stem(x)
        for i in range(4):
            x = self.stage(i)(torch.cat([x, laterals[i]], dim=1))
        return x


class SlowFast(nn.Module):
    """SlowFast-R50/R101 with AlphAction-style laterals and a linear classifier on the slow pathway.

    Args:
        num_classes: classifier outputs.
        depth: 50 or 101 (blocks per stage (3, 4, 6, 3) or (3, 4, 23, 3)).
        width: slow-pathway base width (64 for the published model; multiple of 8). The fast pathway
            uses width / 8 channels.
        dropout_rate: dropout before the classifier.
        frozen_bn: use ``FrozenBatchNorm3d`` everywhere (fixed statistics and affine terms).
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 101,
        width: int = 64,
        dropout_rate: float = 0.0,
        frozen_bn: bool = False,
    ) -> None:
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"SlowFast depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        if width <= 0 or width % 8:
            raise ValueError(f"SlowFast width must be a positive multiple of 8, got {width}")
        blocks = BLOCKS_PER_STAGE[depth]
        self.slow = SlowPathway(width, blocks, frozen_bn)
        self.fast = FastPathway(width // 8, blocks, frozen_bn)
        self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(32 * width, num_classes)
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.zeros_(self.projection.bias)

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (N, num_classes) for a clip (N, 3, T, H, W), T a multiple of 4, or a list ``[clip]``."""
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[0]
        if x.dim() != 5 or x.shape[2] % SLOW_FRAME_STRIDE:
            raise ValueError(
                f"SlowFast expects one clip (N, C, T, H, W) with T a multiple of {SLOW_FRAME_STRIDE}, "
                f"got shape {tuple(x.shape)}"
            )
        # The fast res5 output is unused, as in the original (its parameters get no gradient).
        _, laterals = self.fast(x)
        slow = self.slow(x[:, :, ::SLOW_FRAME_STRIDE], laterals)
        pooled = slow.mean(dim=(2, 3, 4))
        return self.projection(self.dropout(pooled))


ALPHACTION_CLASSIFIER = ("cls_head.pred.weight", "cls_head.pred.bias")  # Kinetics head of AlphAction files


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor],
    model_state_dict: Mapping[str, torch.Tensor],
    source_format: str,
    notes: dict[str, list[str]],
) -> dict[str, torch.Tensor]:
    """AlphAction SlowFast files (``{"model": ...}`` with ``module.`` / ``backbone.`` in the names): those
    prefixes removed and their Kinetics classifier dropped; other layouts pass unchanged."""
    if source_format != "alphaction":
        return state_dict
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key.replace("module.", "").replace("backbone.", "")
        if new in out:
            raise ValueError(f"two checkpoint keys map to {new!r} after removing module./backbone.")
        out[new] = value
    for key in ALPHACTION_CLASSIFIER:
        if out.pop(key, None) is not None:
            notes.setdefault("dropped", []).append(key)
    return out


def check_sf_config(cfg) -> None:
    """The slow pathway takes every 4th frame: DATA.NUM_FRAMES must be a multiple of 4."""
    if cfg.DATA.NUM_FRAMES % SLOW_FRAME_STRIDE:
        raise ValueError(
            f"SF splits clips into slow frames 0, {SLOW_FRAME_STRIDE}, ...: DATA.NUM_FRAMES "
            f"({cfg.DATA.NUM_FRAMES}) % {SLOW_FRAME_STRIDE} != 0"
        )


def _is_sf(keys: set[str]) -> bool:
    return "slow.conv1.weight" in keys and "fast.conv1.weight" in keys


@MODEL_REGISTRY.register()
@model_card(
    name="SF",
    fingerprint=_is_sf,
    classifier="projection",
    pretrained_key="SF.PRETRAIN_NAME",
    checkpoint_filter=checkpoint_filter_fn,
    check_config=check_sf_config,
    unused_parameters=True,  # the fast res5 stage is discarded, as the original
)
def sf_from_cfg(cfg) -> SlowFast:
    """Build the SF model from ``MODEL.NUM_CLASSES`` and ``SF.{DEPTH, WIDTH, DROPOUT_RATE, FROZEN_BN}``."""
    return SlowFast(
        num_classes=cfg.MODEL.NUM_CLASSES,
        depth=cfg.SF.DEPTH,
        width=cfg.SF.WIDTH,
        dropout_rate=cfg.SF.DROPOUT_RATE,
        frozen_bn=cfg.SF.FROZEN_BN,
    )
