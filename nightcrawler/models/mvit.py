"""Multiscale Vision Transformer v1 (Fan et al. 2021), PySlowFast's ``MViT`` as Nightcrawler uses it.

Tokens are a class token plus a T'xH'xW' grid. Blocks pool queries (shrinking the grid) and keys /
values (cheaper attention) with depthwise convolutions followed by LayerNorm, and widen the channels
and heads where ``dim_mul`` / ``head_mul`` say. Module and parameter names follow the original so
PySlowFast's MViT checkpoints load with ``strict=True``; torchvision's ``mvit_v1_b`` weights (the same
architecture with other names) convert through :func:`checkpoint_filter_fn`.

The model's eval forward returns **softmax probabilities** (the head applies its activation when not
training); in training mode it returns logits. Position embeddings are sized for ``num_frames`` x
``crop_size`` x ``crop_size`` inputs, and other input sizes are rejected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from nightcrawler.models.layers import (
    DropPath,
    Mlp,
    init_transformer_weights,
    multi_head_attention,
    trunc_normal_,
)
from nightcrawler.models.registry import MODEL_REGISTRY, model_card

__all__ = [
    "MViT",
    "MViTBlockSpec",
    "MultiScaleAttention",
    "MultiScaleBlock",
    "PatchEmbed",
    "TransformerBasicHead",
    "checkpoint_filter_fn",
    "is_torchvision_mvit",
    "mvit_block_specs",
    "mvit_from_cfg",
    "round_width",
]

# LayerNorm eps of the blocks' norm1 / norm2 and the final norm. The LayerNorms on pooled q/k/v take theirs
# as an argument (MVIT.POOL_NORM_EPS): 1e-5 in PySlowFast, 1e-6 in torchvision's mvit_v1_b.
_BLOCK_NORM_EPS = 1e-6
DEFAULT_POOL_NORM_EPS = 1e-5


def round_width(width: float, multiplier: float, min_width: int = 1, divisor: int = 1) -> int:
    """Returns ``width * multiplier`` rounded to a multiple of ``divisor`` (PySlowFast's rule).

    The result is at least ``min_width`` (or ``divisor`` when ``min_width`` is 0) and is bumped up by
    one ``divisor`` when plain rounding would lose more than 10 %.
    """
    if not multiplier:
        return int(width)
    width = width * multiplier
    min_width = min_width or divisor
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


def _pool_kernel(stride: Sequence[int]) -> list[int]:
    return [s + 1 if s > 1 else s for s in stride]


@dataclass(frozen=True)
class MViTBlockSpec:
    """Shape of one MViT block as derived from the configuration."""

    dim: int
    dim_out: int
    num_heads: int
    kernel_q: tuple[int, ...]
    stride_q: tuple[int, ...]
    kernel_kv: tuple[int, ...]
    stride_kv: tuple[int, ...]


def mvit_block_specs(
    depth: int,
    embed_dim: int,
    num_heads: int,
    dim_mul: Sequence[Sequence[float]] = (),
    head_mul: Sequence[Sequence[float]] = (),
    pool_q_stride: Sequence[Sequence[int]] = (),
    pool_kv_stride: Sequence[Sequence[int]] | None = None,
    pool_kv_stride_adaptive: Sequence[int] | None = None,
    pool_kvq_kernel: Sequence[int] | None = None,
) -> list[MViTBlockSpec]:
    """Derives every block's widths, heads and pooling from MViT's schedule arguments.

    ``dim_mul`` / ``head_mul`` are ``[block, factor]`` pairs applied from that block on; ``pool_q_stride``
    and ``pool_kv_stride`` are ``[block, st, sh, sw]`` rows. With ``pool_kv_stride_adaptive`` the key /
    value stride starts at that value and is divided (floored, at least 1) by the query stride at every
    query-pooling block; it then replaces ``pool_kv_stride``. Pooling kernels are ``pool_kvq_kernel``, or
    stride + 1 where the stride exceeds 1. Empty kernel/stride tuples mean "no pooling" (the attention
    also skips kernels and strides that are all ones).
    """
    for name, rows, width in (
        ("DIM_MUL", dim_mul, 2),
        ("HEAD_MUL", head_mul, 2),
        ("POOL_Q_STRIDE", pool_q_stride, 4),
        ("POOL_KV_STRIDE", pool_kv_stride or (), 4),
    ):
        for row in rows:
            if len(row) != width or not 0 <= int(row[0]) <= (depth if width == 2 else depth - 1):
                raise ValueError(f"MVIT.{name}: bad entry {list(row)} for DEPTH {depth}")

    dim_factor = [1.0] * (depth + 1)
    head_factor = [1.0] * (depth + 1)
    for block, factor in dim_mul:
        dim_factor[int(block)] = factor
    for block, factor in head_mul:
        head_factor[int(block)] = factor

    stride_q: list[list[int]] = [[] for _ in range(depth)]
    kernel_q: list[list[int]] = [[] for _ in range(depth)]
    for block, *stride in pool_q_stride:
        stride_q[int(block)] = list(stride)
        kernel_q[int(block)] = list(pool_kvq_kernel) if pool_kvq_kernel is not None else _pool_kernel(stride)

    if pool_kv_stride_adaptive is not None:
        current = list(pool_kv_stride_adaptive)
        pool_kv_stride = []
        for block in range(depth):
            if stride_q[block]:
                current = [max(s // q, 1) for s, q in zip(current, stride_q[block])]
            pool_kv_stride.append([block, *current])
    stride_kv: list[list[int]] = [[] for _ in range(depth)]
    kernel_kv: list[list[int]] = [[] for _ in range(depth)]
    for block, *stride in pool_kv_stride or ():
        stride_kv[int(block)] = list(stride)
        kernel_kv[int(block)] = list(pool_kvq_kernel) if pool_kvq_kernel is not None else _pool_kernel(stride)

    specs = []
    dim, heads = embed_dim, num_heads
    for i in range(depth):
        heads = round_width(heads, head_factor[i])
        dim = round_width(dim, dim_factor[i], divisor=heads)
        dim_out = round_width(dim, dim_factor[i + 1], divisor=round_width(heads, head_factor[i + 1]))
        specs.append(
            MViTBlockSpec(
                dim,
                dim_out,
                heads,
                tuple(kernel_q[i]),
                tuple(stride_q[i]),
                tuple(kernel_kv[i]),
                tuple(stride_kv[i]),
            )
        )
    return specs


def _attention_pool(
    tokens: torch.Tensor,
    pool: nn.Module | None,
    thw: Sequence[int],
    has_cls_embed: bool,
    norm: nn.Module | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Pools tokens (B, heads, L, C) or (B, L, C) over their T x H x W grid; the class token is kept
    aside and put back in front before ``norm``. Returns the tokens and the new grid."""
    if pool is None:
        return tokens, list(thw)
    squeeze = tokens.ndim == 3
    if squeeze:
        tokens = tokens.unsqueeze(1)
    elif tokens.ndim != 4:
        raise ValueError(f"attention pooling expects 3-D or 4-D tokens, got shape {tuple(tokens.shape)}")
    if has_cls_embed:
        cls_tok, tokens = tokens[:, :, :1, :], tokens[:, :, 1:, :]
    batch, heads, _, channels = tokens.shape
    t, h, w = thw
    grid = tokens.reshape(batch * heads, t, h, w, channels).permute(0, 4, 1, 2, 3)
    grid = pool(grid)
    new_thw = list(grid.shape[2:])
    tokens = grid.reshape(batch, heads, channels, -1).transpose(2, 3)
    if has_cls_embed:
        tokens = torch.cat((cls_tok, tokens), dim=2)
    if norm is not None:
        tokens = norm(tokens)
    if squeeze:
        tokens = tokens.squeeze(1)
    return tokens, new_thw


def _make_pool(
    mode: str, head_dim: int, kernel: Sequence[int], stride: Sequence[int], norm_eps: float
) -> tuple[nn.Module | None, nn.Module | None]:
    """Returns (pooling op, LayerNorm or None) for one of q / k / v; (None, None) for no pooling."""
    if not kernel or (math.prod(kernel) == 1 and math.prod(stride) == 1):
        return None, None
    padding = [k // 2 for k in kernel]
    if mode == "conv":
        conv = nn.Conv3d(
            head_dim, head_dim, tuple(kernel), tuple(stride), padding, groups=head_dim, bias=False
        )
        return conv, nn.LayerNorm(head_dim, eps=norm_eps)
    if mode == "avg":
        return nn.AvgPool3d(tuple(kernel), tuple(stride), padding), None
    if mode == "max":
        return nn.MaxPool3d(tuple(kernel), tuple(stride), padding), None
    raise ValueError(f"MVIT.MODE must be conv, avg or max, got {mode!r}")


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention with pooled queries, keys and values.

    Args:
        dim: token channels (divisible by ``num_heads``).
        num_heads: attention heads.
        qkv_bias: bias on the qkv projection.
        drop_rate: dropout after the output projection.
        kernel_q, stride_q: query pooling (empty or all ones: none).
        kernel_kv, stride_kv: key/value pooling (empty or all ones: none).
        has_cls_embed: the first token is a class token, never pooled.
        mode: pooling operator: "conv" (depthwise Conv3d + LayerNorm per head), "avg" or "max".
        pool_norm_eps: eps of the LayerNorms after "conv" pooling.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        drop_rate: float = 0.0,
        kernel_q: Sequence[int] = (),
        kernel_kv: Sequence[int] = (),
        stride_q: Sequence[int] = (),
        stride_kv: Sequence[int] = (),
        has_cls_embed: bool = True,
        mode: str = "conv",
        pool_norm_eps: float = DEFAULT_POOL_NORM_EPS,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"MultiScaleAttention: dim {dim} is not divisible into {num_heads} heads")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.has_cls_embed = has_cls_embed
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop_rate)
        self.pool_q, self.norm_q = _make_pool(mode, head_dim, kernel_q, stride_q, pool_norm_eps)
        self.pool_k, self.norm_k = _make_pool(mode, head_dim, kernel_kv, stride_kv, pool_norm_eps)
        self.pool_v, self.norm_v = _make_pool(mode, head_dim, kernel_kv, stride_kv, pool_norm_eps)

    def forward(self, x: torch.Tensor, thw: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        batch, length, channels = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, channels // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, q_thw = _attention_pool(q, self.pool_q, thw, self.has_cls_embed, self.norm_q)
        k, _ = _attention_pool(k, self.pool_k, thw, self.has_cls_embed, self.norm_k)
        v, _ = _attention_pool(v, self.pool_v, thw, self.has_cls_embed, self.norm_v)
        x = multi_head_attention(q, k, v, scale=self.scale)
        x = x.transpose(1, 2).reshape(batch, q.shape[2], channels)
        return self.proj_drop(self.proj(x)), q_thw


class MultiScaleBlock(nn.Module):
    """MViT block: ``x = pool_skip(x) + DropPath(attn(norm1(x)))``, then
    ``x = (proj(norm2(x)) if dim != dim_out else x) + DropPath(mlp(norm2(x)))``.

    The residual of a query-pooling block is max-pooled (kernel stride + 1, padding kernel // 2).

    Args:
        dim: input channels.
        dim_out: output channels (``proj`` exists when they differ).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.
        qkv_bias: bias on the qkv projection.
        drop_rate: dropout after the attention projection and inside the MLP.
        drop_path: stochastic-depth probability of both residual branches.
        kernel_q, stride_q, kernel_kv, stride_kv: pooling, see :class:`MultiScaleAttention`.
        has_cls_embed: the first token is a class token.
        mode: pooling operator ("conv", "avg", "max").
        pool_norm_eps: eps of the LayerNorms after "conv" pooling.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_rate: float = 0.0,
        drop_path: float = 0.0,
        kernel_q: Sequence[int] = (),
        kernel_kv: Sequence[int] = (),
        stride_q: Sequence[int] = (),
        stride_kv: Sequence[int] = (),
        has_cls_embed: bool = True,
        mode: str = "conv",
        pool_norm_eps: float = DEFAULT_POOL_NORM_EPS,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.has_cls_embed = has_cls_embed
        self.norm1 = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.attn = MultiScaleAttention(
            dim, num_heads, qkv_bias, drop_rate, kernel_q, kernel_kv, stride_q, stride_kv, has_cls_embed, mode,
            pool_norm_eps,
        )  # fmt: skip
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim_out, drop=drop_rate)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        if stride_q:
            skip_kernel = _pool_kernel(stride_q)
            self.pool_skip: nn.Module | None = nn.MaxPool3d(
                skip_kernel, tuple(stride_q), [k // 2 for k in skip_kernel]
            )
        else:
            self.pool_skip = None

    def forward(self, x: torch.Tensor, thw: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        x_attn, new_thw = self.attn(self.norm1(x), thw)
        x_res, _ = _attention_pool(x, self.pool_skip, thw, self.has_cls_embed)
        x = x_res + self.drop_path(x_attn)
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if self.dim != self.dim_out:
            x = self.proj(x_norm)
        return x + self.drop_path(x_mlp), new_thw


class PatchEmbed(nn.Module):
    """Conv3d patch embedding: (N, C, T, H, W) -> tokens (N, T'H'W', dim_out)."""

    def __init__(
        self, dim_in: int, dim_out: int, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
    ) -> None:
        super().__init__()
        self.proj = nn.Conv3d(dim_in, dim_out, tuple(kernel), tuple(stride), tuple(padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TransformerBasicHead(nn.Module):
    """Dropout then Linear (``projection``); the activation (softmax or sigmoid) only when not training.

    Args:
        dim_in: input features.
        num_classes: outputs.
        dropout_rate: dropout before the projection.
        act_func: "softmax" (over classes) or "sigmoid".
    """

    def __init__(
        self, dim_in: int, num_classes: int, dropout_rate: float = 0.0, act_func: str = "softmax"
    ) -> None:
        super().__init__()
        if dropout_rate > 0.0:
            self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(dim_in, num_classes)
        if act_func == "softmax":
            self.act: nn.Module = nn.Softmax(dim=1)
        elif act_func == "sigmoid":
            self.act = nn.Sigmoid()
        else:
            raise ValueError(f"MODEL.HEAD_ACT must be softmax or sigmoid, got {act_func!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "dropout"):
            x = self.dropout(x)
        x = self.projection(x)
        return x if self.training else self.act(x)


class MViT(nn.Module):
    """MViT v1 video classifier: input (N, C, num_frames, crop_size, crop_size) (or ``[x]``);
    output (N, num_classes): probabilities in eval mode, logits in training mode.

    Args:
        num_classes: classifier outputs.
        num_frames: input frames (position embeddings are sized from it).
        crop_size: input height and width.
        in_chans: input channels.
        embed_dim: token width of the first block.
        num_heads: heads of the first block.
        depth: number of blocks.
        mlp_ratio: MLP hidden width / block input width.
        qkv_bias: bias on the qkv projections.
        drop_rate: dropout after the position embedding, attention projections and inside the MLPs.
        drop_path_rate: stochastic depth of the last block; it grows linearly from 0 over the blocks.
        patch_kernel, patch_stride, patch_padding: the patch-embedding Conv3d.
        mode: q/k/v pooling operator: "conv", "avg" or "max".
        pool_norm_eps: eps of the LayerNorms after "conv" pooling (PySlowFast: 1e-5, torchvision: 1e-6).
        cls_embed_on: prepend a class token (classify from it; otherwise from the token mean).
        sep_pos_embed: separate spatial, temporal and class position embeddings (else one table).
        norm_stem: LayerNorm after adding the position embedding.
        dim_mul, head_mul, pool_q_stride, pool_kv_stride, pool_kv_stride_adaptive, pool_kvq_kernel:
            the block schedule, see :func:`mvit_block_specs`.
        head_dropout_rate: dropout before the classifier.
        head_act: "softmax" or "sigmoid", applied in eval mode.
        act_checkpoint: run every block under activation checkpointing while training.
        zero_decay_pos_cls: report the position embeddings and class token in ``no_weight_decay()``.
    """

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 16,
        crop_size: int = 224,
        in_chans: int = 3,
        embed_dim: int = 96,
        num_heads: int = 1,
        depth: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        patch_kernel: Sequence[int] = (3, 7, 7),
        patch_stride: Sequence[int] = (2, 4, 4),
        patch_padding: Sequence[int] = (1, 3, 3),
        mode: str = "conv",
        pool_norm_eps: float = DEFAULT_POOL_NORM_EPS,
        cls_embed_on: bool = True,
        sep_pos_embed: bool = True,
        norm_stem: bool = False,
        dim_mul: Sequence[Sequence[float]] = (),
        head_mul: Sequence[Sequence[float]] = (),
        pool_q_stride: Sequence[Sequence[int]] = (),
        pool_kv_stride: Sequence[Sequence[int]] | None = None,
        pool_kv_stride_adaptive: Sequence[int] | None = None,
        pool_kvq_kernel: Sequence[int] | None = None,
        head_dropout_rate: float = 0.5,
        head_act: str = "softmax",
        act_checkpoint: bool = False,
        zero_decay_pos_cls: bool = False,
    ) -> None:
        super().__init__()
        if len(patch_kernel) != 3 or len(patch_stride) != 3 or len(patch_padding) != 3:
            raise ValueError("MViT: patch_kernel, patch_stride and patch_padding need 3 values (t, h, w)")
        self.num_frames = num_frames
        self.crop_size = crop_size
        self.in_chans = in_chans
        self.cls_embed_on = cls_embed_on
        self.sep_pos_embed = sep_pos_embed
        self.act_checkpoint = act_checkpoint
        self.zero_decay_pos_cls = zero_decay_pos_cls
        self.drop_rate = drop_rate

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_kernel, patch_stride, patch_padding)
        input_dims = (num_frames, crop_size, crop_size)
        # as the original: grid = input // stride (also the conv's output size for the usual paddings)
        self.patch_dims = [size // stride for size, stride in zip(input_dims, patch_stride)]
        conv_dims = [
            (size + 2 * pad - kernel) // stride + 1
            for size, kernel, stride, pad in zip(input_dims, patch_kernel, patch_stride, patch_padding)
        ]
        if conv_dims != self.patch_dims:
            raise ValueError(
                f"MViT: a {list(input_dims)} input gives a {conv_dims} token grid with patch kernel "
                f"{list(patch_kernel)}, stride {list(patch_stride)}, padding {list(patch_padding)}, but the "
                f"position embeddings are sized input // stride = {self.patch_dims}; adjust MVIT.PATCH_PADDING"
            )
        num_patches = math.prod(self.patch_dims)

        if cls_embed_on:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if sep_pos_embed:
            self.pos_embed_spatial = nn.Parameter(
                torch.zeros(1, self.patch_dims[1] * self.patch_dims[2], embed_dim)
            )
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, self.patch_dims[0], embed_dim))
            if cls_embed_on:
                self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, embed_dim))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + int(cls_embed_on), embed_dim))
        if drop_rate > 0.0:
            self.pos_drop = nn.Dropout(drop_rate)
        self.norm_stem = nn.LayerNorm(embed_dim, eps=_BLOCK_NORM_EPS) if norm_stem else None

        specs = mvit_block_specs(
            depth, embed_dim, num_heads, dim_mul, head_mul, pool_q_stride, pool_kv_stride,
            pool_kv_stride_adaptive, pool_kvq_kernel,
        )  # fmt: skip
        self.block_specs = specs
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            MultiScaleBlock(
                spec.dim, spec.dim_out, spec.num_heads, mlp_ratio, qkv_bias, drop_rate, rates[i],
                spec.kernel_q, spec.kernel_kv, spec.stride_q, spec.stride_kv, cls_embed_on, mode,
                pool_norm_eps,
            )
            for i, spec in enumerate(specs)
        )  # fmt: skip
        out_dim = specs[-1].dim_out if specs else embed_dim
        self.norm = nn.LayerNorm(out_dim, eps=_BLOCK_NORM_EPS)
        self.head = TransformerBasicHead(out_dim, num_classes, head_dropout_rate, head_act)

        for param in self.parameters(recurse=False):
            trunc_normal_(param, std=0.02)  # position embeddings and class token
        self.apply(init_transformer_weights)

    def no_weight_decay(self) -> set[str]:
        """Names of the top-level parameters exempt from weight decay (MVIT.ZERO_DECAY_POS_CLS)."""
        if not self.zero_decay_pos_cls:
            return set()
        return {name for name, _ in self.named_parameters(recurse=False)}

    def _position_embedding(self) -> torch.Tensor:
        if not self.sep_pos_embed:
            return self.pos_embed
        t, h, w = self.patch_dims
        pos = self.pos_embed_spatial.repeat(1, t, 1) + torch.repeat_interleave(
            self.pos_embed_temporal, h * w, dim=1
        )
        if self.cls_embed_on:
            pos = torch.cat([self.pos_embed_class, pos], dim=1)
        return pos

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, (list, tuple)):
            x = x[0]
        expected = (self.in_chans, self.num_frames, self.crop_size, self.crop_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"MViT expects input (N, {expected[0]}, {expected[1]}, {expected[2]}, {expected[3]}) "
                f"(DATA.NUM_FRAMES frames of DATA.TRAIN_CROP_SIZE pixels), got shape {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        if self.cls_embed_on:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self._position_embedding()
        if self.drop_rate > 0.0:
            x = self.pos_drop(x)
        if self.norm_stem is not None:
            x = self.norm_stem(x)

        thw = list(self.patch_dims)
        checkpointing = self.act_checkpoint and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if checkpointing:
                x, thw = torch.utils.checkpoint.checkpoint(block, x, thw, use_reentrant=False)
            else:
                x, thw = block(x, thw)

        x = self.norm(x)
        x = x[:, 0] if self.cls_embed_on else x.mean(1)
        return self.head(x)


def check_mvit_config(cfg: Any) -> None:
    """MViT's position embeddings are sized for one input: the training and test crops must agree."""
    if cfg.DATA.TRAIN_CROP_SIZE != cfg.DATA.TEST_CROP_SIZE:
        raise ValueError(
            f"MViT needs DATA.TRAIN_CROP_SIZE == DATA.TEST_CROP_SIZE (position embeddings are sized for one "
            f"input size), got {cfg.DATA.TRAIN_CROP_SIZE} and {cfg.DATA.TEST_CROP_SIZE}"
        )


# torchvision.models.video.mvit_v1_b names -> ours (same architecture, one tensor per key both ways)
_TORCHVISION_RENAMES = (
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^pos_encoding\.class_token$", "cls_token"),
    (r"^pos_encoding\.spatial_pos$", "pos_embed_spatial"),
    (r"^pos_encoding\.temporal_pos$", "pos_embed_temporal"),
    (r"^pos_encoding\.class_pos$", "pos_embed_class"),
    (r"\.attn\.project\.0\.", ".attn.proj."),
    (r"\.attn\.pool_([qkv])\.pool\.", r".attn.pool_\1."),
    (r"\.attn\.pool_([qkv])\.norm_act\.0\.", r".attn.norm_\1."),
    (r"\.mlp\.0\.", ".mlp.fc1."),
    (r"\.mlp\.3\.", ".mlp.fc2."),
    (r"^(blocks\.\d+)\.project\.", r"\1.proj."),
    (r"^head\.1\.", "head.projection."),
)
# torchvision keeps the class token and position embeddings without the leading (1, ...) dimensions
_TORCHVISION_UNSQUEEZED = ("cls_token", "pos_embed_class", "pos_embed_spatial", "pos_embed_temporal")


def is_torchvision_mvit(keys: set[str]) -> bool:
    """True for the keys of a ``torchvision.models.video.MViT`` state dict (v1 or v2)."""
    return "conv_proj.weight" in keys and "pos_encoding.class_token" in keys


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor],
    model_state_dict: Mapping[str, torch.Tensor],
    source_format: str,
    notes: dict,
) -> dict[str, torch.Tensor]:
    """torchvision MViT v1 weights (``mvit_v1_b``, e.g. ``torch.save(model.state_dict())``) renamed to ours, the
    class token and position embeddings given their leading dimensions; other layouts pass unchanged.

    Sets ``notes["source_format"]`` to ``"torchvision"``. Raises ValueError for torchvision's MViT v2 (relative
    position embeddings and residual pooling, which this MViT v1 does not have).
    """
    if not is_torchvision_mvit(set(state_dict)):
        return state_dict
    if "pos_encoding.spatial_pos" not in state_dict or any(".rel_pos_" in k for k in state_dict):
        raise ValueError(
            "torchvision MViT v2 weights (mvit_v2_s: relative position embeddings, residual pooling) do not fit "
            "Nightcrawler's MViT v1; only torchvision's mvit_v1_b converts"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, replacement in _TORCHVISION_RENAMES:
            new = re.sub(pattern, replacement, new)
        if new in _TORCHVISION_UNSQUEEZED:
            value = value.reshape(1, -1, value.shape[-1])
        out[new] = value
    notes["source_format"] = "torchvision"
    return out


def _is_mvit(keys: set[str]) -> bool:
    return "patch_embed.proj.weight" in keys and ("cls_token" in keys or "pos_embed_spatial" in keys)


@MODEL_REGISTRY.register()
@model_card(
    name="MViT",
    fingerprint=_is_mvit,
    classifier="head.projection",
    checkpoint_filter=checkpoint_filter_fn,
    check_config=check_mvit_config,
    outputs="probabilities",  # the head applies softmax in eval mode, as the original
)
def mvit_from_cfg(cfg: Any) -> MViT:
    """Builds :class:`MViT` from the config keys the original builder reads.

    Reads MODEL.{NUM_CLASSES, DROPOUT_RATE, HEAD_ACT, ACT_CHECKPOINT}, DATA.{NUM_FRAMES, TRAIN_CROP_SIZE,
    TEST_CROP_SIZE, INPUT_CHANNEL_NUM[0]} and MVIT.{PATCH_2D, PATCH_KERNEL, PATCH_STRIDE, PATCH_PADDING,
    EMBED_DIM, NUM_HEADS, MLP_RATIO, QKV_BIAS, DROPOUT_RATE, DEPTH, DROPPATH_RATE, MODE, POOL_NORM_EPS,
    CLS_EMBED_ON, SEP_POS_EMBED, NORM, DIM_MUL, HEAD_MUL, POOL_Q_STRIDE, POOL_KVQ_KERNEL,
    POOL_KV_STRIDE_ADAPTIVE, POOL_KV_STRIDE, NORM_STEM, ZERO_DECAY_POS_CLS}. MVIT.POOL_FIRST has no effect in the original either.
    The cfg is not modified (the original overwrites MVIT.POOL_KV_STRIDE with the adaptive strides).
    """
    m = cfg.MVIT
    check_mvit_config(cfg)
    if m.PATCH_2D:
        raise NotImplementedError(
            "MVIT.PATCH_2D: True (2-D image patch embedding) is not supported; set it False"
        )
    if m.NORM != "layernorm":
        raise NotImplementedError(f"MVIT.NORM: only 'layernorm' is supported, got {m.NORM!r}")
    return MViT(
        num_classes=cfg.MODEL.NUM_CLASSES,
        num_frames=cfg.DATA.NUM_FRAMES,
        crop_size=cfg.DATA.TRAIN_CROP_SIZE,
        in_chans=cfg.DATA.INPUT_CHANNEL_NUM[0],
        embed_dim=m.EMBED_DIM,
        num_heads=m.NUM_HEADS,
        depth=m.DEPTH,
        mlp_ratio=m.MLP_RATIO,
        qkv_bias=m.QKV_BIAS,
        drop_rate=m.DROPOUT_RATE,
        drop_path_rate=m.DROPPATH_RATE,
        patch_kernel=m.PATCH_KERNEL,
        patch_stride=m.PATCH_STRIDE,
        patch_padding=m.PATCH_PADDING,
        mode=m.MODE,
        pool_norm_eps=m.POOL_NORM_EPS,
        cls_embed_on=m.CLS_EMBED_ON,
        sep_pos_embed=m.SEP_POS_EMBED,
        norm_stem=m.NORM_STEM,
        dim_mul=m.DIM_MUL,
        head_mul=m.HEAD_MUL,
        pool_q_stride=m.POOL_Q_STRIDE,
        pool_kv_stride=m.POOL_KV_STRIDE,
        pool_kv_stride_adaptive=m.POOL_KV_STRIDE_ADAPTIVE,
        pool_kvq_kernel=m.POOL_KVQ_KERNEL,
        head_dropout_rate=cfg.MODEL.DROPOUT_RATE,
        head_act=cfg.MODEL.HEAD_ACT,
        act_checkpoint=cfg.MODEL.ACT_CHECKPOINT,
        zero_decay_pos_cls=m.ZERO_DECAY_POS_CLS,
    )
