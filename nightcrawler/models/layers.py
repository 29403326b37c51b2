"""Building blocks shared by the transformer video models (UniFormer, MViT).

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on GPU).
The explicit ``softmax(q k^T * scale) v`` form, which the original code uses, stays available as a
switch for benchmarking and for checking the fused path: :func:`set_explicit_attention` /
:func:`explicit_attention`, or ``explicit=True`` per call.

Stochastic depth and truncated-normal initialisation come from timm (``DropPath``, ``trunc_normal_``)
and are re-exported here so the model files import their layers from one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

__all__ = [
    "Attention",
    "DropPath",
    "Mlp",
    "explicit_attention",
    "explicit_attention_enabled",
    "multi_head_attention",
    "set_explicit_attention",
    "trunc_normal_",
]

_EXPLICIT_ATTENTION = False


def init_transformer_weights(module: nn.Module) -> None:
    """The ViT initialisation both UniFormer and MViT use (``model.apply(init_transformer_weights)``):
    truncated-normal(0.02) Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def set_explicit_attention(enabled: bool) -> None:
    """Selects the explicit softmax(QK^T)V attention (True) or the fused SDPA kernel (False) globally."""
    global _EXPLICIT_ATTENTION
    _EXPLICIT_ATTENTION = bool(enabled)


def explicit_attention_enabled() -> bool:
    """Whether attention currently runs in the explicit (non-fused) form."""
    return _EXPLICIT_ATTENTION


@contextmanager
def explicit_attention(enabled: bool = True) -> Iterator[None]:
    """Context manager: run attention in the explicit form (or the fused form with ``enabled=False``)."""
    previous = _EXPLICIT_ATTENTION
    set_explicit_attention(enabled)
    try:
        yield
    finally:
        set_explicit_attention(previous)


def multi_head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    dropout_p: float = 0.0,
    explicit: bool | None = None,
) -> torch.Tensor:
    """Returns ``softmax(q @ k^T * scale) @ v`` for tensors shaped (B, heads, L, head_dim).

    ``dropout_p`` is applied to the attention weights (pass 0 outside training). ``explicit`` picks
    the implementation for this call; None follows the global switch.
    """
    if explicit is None:
        explicit = _EXPLICIT_ATTENTION
    if explicit:
        weights = (q @ k.transpose(-2, -1)) * scale
        weights = weights.softmax(dim=-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p)
        return weights @ v
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)


class Mlp(nn.Module):
    """Two-layer perceptron ``fc1 -> GELU (exact) -> dropout -> fc2 -> dropout``.

    Args:
        in_features: input channels.
        hidden_features: hidden channels (default: ``in_features``).
        out_features: output channels (default: ``in_features``).
        drop: dropout probability after the activation and after ``fc2``.
        conv3d: use 1x1x1 ``Conv3d`` layers on (N, C, T, H, W) tensors instead of ``Linear`` layers on
            channel-last tensors (UniFormer's convolutional blocks).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        drop: float = 0.0,
        conv3d: bool = False,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        if conv3d:
            self.fc1: nn.Module = nn.Conv3d(in_features, hidden_features, kernel_size=1)
        else:
            self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        if conv3d:
            self.fc2: nn.Module = nn.Conv3d(hidden_features, out_features, kernel_size=1)
        else:
            self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class Attention(nn.Module):
    """Global multi-head self-attention over tokens (N, L, C) with a fused ``qkv`` projection.

    Args:
        dim: token channels; must be divisible by ``num_heads``.
        num_heads: attention heads.
        qkv_bias: bias on the ``qkv`` projection.
        qk_scale: logit scale; a falsy value means ``head_dim ** -0.5``.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"Attention: dim {dim} is not divisible into {num_heads} heads")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, channels = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, channels // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.attn_drop if self.training else 0.0
        x = multi_head_attention(q, k, v, scale=self.scale, dropout_p=dropout_p)
        x = x.transpose(1, 2).reshape(batch, length, channels)
        return self.proj_drop(self.proj(x))
