"""UniFormer for video (Li et al. 2022), as configured by Nightcrawler's ``Uniformer`` model.

Four stages: two of convolutional blocks (``CBlock``: BatchNorm, depthwise 5x5x5 "local affinity")
and two of global self-attention blocks (``SABlock``), each stage opened by a patch embedding.
Module and parameter names follow the original so its checkpoints and the UniFormer zoo weights load
with ``strict=True``. The number of heads per attention stage is ``embed_dim // head_dim``; the
original builder ignores ``UNIFORMER.NUM_HEADS`` and so does :func:`uniformer_from_cfg`.

:func:`inflate_uniformer_2d_state_dict` turns ImageNet (2-D) UniFormer weights into this model's
3-D layout, as the original's pretrained hook does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from nightcrawler.models.layers import Attention, DropPath, Mlp, init_transformer_weights
from nightcrawler.models.registry import MODEL_REGISTRY, model_card

__all__ = [
    "CBlock",
    "PatchEmbed",
    "SABlock",
    "SplitSABlock",
    "Uniformer",
    "inflate_uniformer_2d_state_dict",
    "uniformer_from_cfg",
]

# LayerNorm eps inside the attention blocks; the patch embeddings keep PyTorch's default 1e-5.
_BLOCK_NORM_EPS = 1e-6


def _depthwise_conv3d(dim: int, kernel_size: int) -> nn.Conv3d:
    return nn.Conv3d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class PatchEmbed(nn.Module):
    """Strided Conv3d patch embedding followed by a channel LayerNorm; (N, C, T, H, W) in and out.

    Args:
        in_chans: input channels.
        embed_dim: output channels.
        kernel_size: (kt, kh, kw) of the convolution.
        stride: (st, sh, sw) of the convolution.
        padding: (pt, ph, pw) of the convolution.
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Conv3d(in_chans, embed_dim, tuple(kernel_size), tuple(stride), tuple(padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3).contiguous()


class CBlock(nn.Module):
    """Convolutional UniFormer block on (N, C, T, H, W).

    ``x += pos_embed(x)`` (depthwise 3x3x3), ``x += DropPath(conv2(attn(conv1(norm1(x)))))`` with a
    depthwise 5x5x5 ``attn`` and 1x1x1 ``conv1``/``conv2``, ``x += DropPath(mlp(norm2(x)))``;
    ``norm1``/``norm2`` are BatchNorm3d.

    Args:
        dim: channels.
        mlp_ratio: MLP hidden width / ``dim``.
        drop: dropout inside the MLP.
        drop_path: stochastic-depth probability of both residual branches.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.pos_embed = _depthwise_conv3d(dim, 3)
        self.norm1 = nn.BatchNorm3d(dim)
        self.conv1 = nn.Conv3d(dim, dim, 1)
        self.conv2 = nn.Conv3d(dim, dim, 1)
        self.attn = _depthwise_conv3d(dim, 5)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.BatchNorm3d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, conv3d=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SABlock(nn.Module):
    """Self-attention UniFormer block: depthwise 3x3x3 position encoding, then a pre-norm transformer
    block (global attention over all T*H*W tokens) on (N, C, T, H, W).

    Args:
        dim: channels.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.
        qkv_bias: bias on the qkv projection.
        qk_scale: attention logit scale (None: ``head_dim ** -0.5``).
        drop: dropout after the attention projection and inside the MLP.
        attn_drop: dropout on the attention weights.
        drop_path: stochastic-depth probability of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.pos_embed = _depthwise_conv3d(dim, 3)
        self.norm1 = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        batch, channels, t, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.transpose(1, 2).reshape(batch, channels, t, h, w)


class SplitSABlock(nn.Module):
    """Divided space-time attention block (``UNIFORMER.SPLIT: True``): temporal attention per pixel
    (``t_norm``, ``t_attn``), then spatial attention per frame (``norm1``, ``attn``), then the MLP.

    The spatial branch's residual is the block input after the position encoding, not the temporal
    branch's output (as in the original). Arguments as :class:`SABlock`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.pos_embed = _depthwise_conv3d(dim, 3)
        self.t_norm = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.t_attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.norm1 = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        batch, channels, t, h, w = x.shape
        # temporal attention: one sequence of T tokens per (sample, pixel)
        tokens = x.reshape(batch, channels, t, h * w).permute(0, 3, 2, 1).reshape(batch * h * w, t, channels)
        tokens = tokens + self.drop_path(self.t_attn(self.t_norm(tokens)))
        # spatial attention: one sequence of H*W tokens per (sample, frame)
        tokens = tokens.reshape(batch, h * w, t, channels).transpose(1, 2).reshape(batch * t, h * w, channels)
        residual = (
            x.reshape(batch, channels, t, h * w).permute(0, 2, 3, 1).reshape(batch * t, h * w, channels)
        )
        tokens = residual + self.drop_path(self.attn(self.norm1(tokens)))
        tokens = tokens.reshape(batch, t * h * w, channels)
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens.transpose(1, 2).reshape(batch, channels, t, h, w)


class Uniformer(nn.Module):
    """UniFormer video classifier: input (N, C, T, H, W) (or ``[x]``), output raw logits (N, num_classes).

    The stem embeds 4x4 patches and halves time (kernel (3, 4, 4), stride (2, 4, 4)); stages 2-4 halve
    H and W. Stages 1-2 are :class:`CBlock` stages, stages 3-4 attention stages. The head is a final
    BatchNorm3d, a mean over T*H*W and a Linear layer; there is no head dropout.

    Args:
        num_classes: classifier outputs (0: no classifier, the pooled features are returned).
        in_chans: input channels.
        depth: blocks per stage (4 values).
        embed_dim: channels per stage (4 values).
        head_dim: channels per attention head; heads per stage are ``embed_dim[i] // head_dim``.
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: bias on the qkv projections.
        qk_scale: attention logit scale (None: ``head_dim ** -0.5``).
        representation_size: width of an optional Linear+Tanh pre-logits layer after pooling (None: none).
        drop_rate: dropout after the stem, after attention projections and inside the MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth of the last block; it grows linearly from 0 over all blocks.
        split: use divided space-time attention blocks (:class:`SplitSABlock`) in stages 3-4.
        std: stages 2-4 patch embeddings use a (3, 2, 2) kernel with temporal padding 1 instead of
            (1, 2, 2) (time is kept either way).
        use_checkpoint: run the first ``checkpoint_num[i]`` blocks of stage i under activation
            checkpointing while training (saves memory; outputs and gradients are unchanged, but a
            checkpointed CBlock's BatchNorm statistics are updated again when it is recomputed, as in
            the original; the experiments checkpoint attention blocks only).
        checkpoint_num: blocks per stage to checkpoint (4 values).
    """

    def __init__(
        self,
        num_classes: int = 400,
        in_chans: int = 3,
        depth: Sequence[int] = (5, 8, 20, 7),
        embed_dim: Sequence[int] = (64, 128, 320, 512),
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        representation_size: int | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        split: bool = False,
        std: bool = False,
        use_checkpoint: bool = False,
        checkpoint_num: Sequence[int] = (0, 0, 0, 0),
    ) -> None:
        super().__init__()
        depth, embed_dim = list(depth), list(embed_dim)
        if len(depth) != 4 or len(embed_dim) != 4 or len(checkpoint_num) != 4:
            raise ValueError(
                f"Uniformer: depth, embed_dim and checkpoint_num need 4 values (one per stage), got "
                f"{depth}, {embed_dim}, {list(checkpoint_num)}"
            )
        if head_dim < 1 or any(dim < head_dim for dim in embed_dim[2:]):
            raise ValueError(f"Uniformer: head_dim {head_dim} must be in [1, {min(embed_dim[2:])}]")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_heads = [dim // head_dim for dim in embed_dim]
        self.use_checkpoint = use_checkpoint
        self.checkpoint_num = list(checkpoint_num)

        later_kernel, later_padding = ((3, 2, 2), (1, 0, 0)) if std else ((1, 2, 2), (0, 0, 0))
        self.patch_embed1 = PatchEmbed(in_chans, embed_dim[0], (3, 4, 4), (2, 4, 4), (1, 0, 0))
        self.patch_embed2 = PatchEmbed(embed_dim[0], embed_dim[1], later_kernel, (1, 2, 2), later_padding)
        self.patch_embed3 = PatchEmbed(embed_dim[1], embed_dim[2], later_kernel, (1, 2, 2), later_padding)
        self.patch_embed4 = PatchEmbed(embed_dim[2], embed_dim[3], later_kernel, (1, 2, 2), later_padding)
        self.pos_drop = nn.Dropout(drop_rate)

        rates = torch.linspace(0, drop_path_rate, sum(depth), device="cpu").tolist()
        offsets = [sum(depth[:i]) for i in range(4)]
        attention_block = SplitSABlock if split else SABlock
        self.blocks1 = nn.ModuleList(
            CBlock(embed_dim[0], mlp_ratio, drop_rate, rates[offsets[0] + i]) for i in range(depth[0])
        )
        self.blocks2 = nn.ModuleList(
            CBlock(embed_dim[1], mlp_ratio, drop_rate, rates[offsets[1] + i]) for i in range(depth[1])
        )
        self.blocks3 = nn.ModuleList(
            attention_block(
                embed_dim[2], self.num_heads[2], mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate,
                rates[offsets[2] + i],
            )
            for i in range(depth[2])
        )  # fmt: skip
        self.blocks4 = nn.ModuleList(
            attention_block(
                embed_dim[3], self.num_heads[3], mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate,
                rates[offsets[3] + i],
            )
            for i in range(depth[3])
        )  # fmt: skip
        self.norm = nn.BatchNorm3d(embed_dim[3])

        num_features = embed_dim[3]
        if representation_size:
            self.pre_logits: nn.Module = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(num_features, representation_size))
            self.pre_logits.add_module("act", nn.Tanh())
            num_features = representation_size
        else:
            self.pre_logits = nn.Identity()
        self.num_features = num_features
        self.head = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

        self.apply(init_transformer_weights)
        if split:
            # start the temporal attention as a pass-through of its value path (original initialisation)
            for name, param in self.named_parameters():
                if ".t_attn." in name:
                    nn.init.constant_(param, 1.0 if name.endswith("t_attn.proj.weight") else 0.0)

    def _run_stage(self, blocks: nn.ModuleList, num_checkpointed: int, x: torch.Tensor) -> torch.Tensor:
        checkpointing = self.use_checkpoint and self.training and torch.is_grad_enabled()
        for i, block in enumerate(blocks):
            if checkpointing and i < num_checkpointed:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the final BatchNorm's output (N, C, T', H', W')."""
        x = self.pos_drop(self.patch_embed1(x))
        x = self._run_stage(self.blocks1, self.checkpoint_num[0], x)
        x = self._run_stage(self.blocks2, self.checkpoint_num[1], self.patch_embed2(x))
        x = self._run_stage(self.blocks3, self.checkpoint_num[2], self.patch_embed3(x))
        x = self._run_stage(self.blocks4, self.checkpoint_num[3], self.patch_embed4(x))
        return self.norm(x)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, (list, tuple)):
            x = x[0]
        if x.ndim != 5 or x.shape[1] != self.patch_embed1.proj.in_channels:
            raise ValueError(
                f"Uniformer expects input (N, {self.patch_embed1.proj.in_channels}, T, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        x = self.forward_features(x).flatten(2).mean(-1)
        return self.head(self.pre_logits(x))


def inflate_uniformer_2d_state_dict(
    state_dict_2d: Mapping[str, torch.Tensor], model_state_dict: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Converts an image (2-D) UniFormer state dict to the video model's layout (timm-style filter).

    For each entry whose shape differs from the video model's: a 4-D kernel (O, I, kh, kw) becomes
    (O, I, kt, kh, kw) by repeating it ``kt`` times along time and dividing by ``kt`` (``kt`` from the
    model's kernel), while tensors whose model counterpart has at most 2 dimensions are kept as they are
    (the classifier). The classifier is dropped when its class count differs from the model's. Every
    other tensor is passed through unchanged. A ``{"model": ...}`` / ``{"model_state": ...}`` container
    is unwrapped first, as upstream UniFormer does.

    Args:
        state_dict_2d: the image model's weights.
        model_state_dict: the video model's ``state_dict()`` (only shapes are read).

    Returns:
        A new state dict to load into the video model with ``strict=False`` (the head may be missing).

    Raises:
        KeyError: an entry of ``state_dict_2d`` does not exist in the video model.
        ValueError: an entry cannot be inflated to the model's shape.
    """
    for container in ("model", "model_state"):
        if isinstance(state_dict_2d.get(container), Mapping):
            state_dict_2d = state_dict_2d[container]
            break
    unknown = [key for key in state_dict_2d if key not in model_state_dict]
    if unknown:
        raise KeyError(f"2-D UniFormer weights have keys the video model lacks: {unknown}")

    result: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict_2d.items():
        target_shape = model_state_dict[key].shape
        if tensor.shape != target_shape and len(target_shape) > 2:
            time_dim = target_shape[2]
            if tensor.ndim != 4 or (*tensor.shape[:2], time_dim, *tensor.shape[2:]) != tuple(target_shape):
                raise ValueError(
                    f"cannot inflate {key}: 2-D weight {tuple(tensor.shape)} does not fit the video "
                    f"model's {tuple(target_shape)}"
                )
            tensor = tensor.unsqueeze(2).repeat(1, 1, time_dim, 1, 1) / time_dim
        result[key] = tensor

    head = result.get("head.weight")
    model_head = model_state_dict.get("head.weight")
    if head is not None and (model_head is None or head.shape[0] != model_head.shape[0]):
        result.pop("head.weight")
        result.pop("head.bias", None)
    return result


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor],
    model_state_dict: Mapping[str, torch.Tensor],
    source_format: str,
    notes: dict[str, list[str]],
) -> dict[str, torch.Tensor]:
    """Image (2-D) UniFormer weights, recognised by a 4-D patch-embedding kernel, become video weights through
    :func:`inflate_uniformer_2d_state_dict`; anything else passes unchanged."""
    key = "patch_embed1.proj.weight"
    if (
        key not in state_dict
        or state_dict[key].dim() != 4
        or model_state_dict.get(key, state_dict[key]).dim() != 5
    ):
        return state_dict
    known = {k: v for k, v in state_dict.items() if k in model_state_dict}  # the rest is reported later
    inflated = inflate_uniformer_2d_state_dict(known, model_state_dict)
    notes.setdefault("inflated", []).extend(k for k, v in inflated.items() if v.dim() != known[k].dim())
    notes.setdefault("dropped", []).extend(k for k in known if k not in inflated)
    return {**{k: v for k, v in state_dict.items() if k not in model_state_dict}, **inflated}


def _is_uniformer(keys: set[str]) -> bool:
    return "patch_embed1.proj.weight" in keys and any(k.startswith("blocks1.") for k in keys)


@MODEL_REGISTRY.register()
@model_card(
    name="Uniformer",
    fingerprint=_is_uniformer,
    classifier="head",
    pretrained_key="UNIFORMER.PRETRAIN_NAME",
    checkpoint_filter=checkpoint_filter_fn,
)
def uniformer_from_cfg(cfg: Any) -> Uniformer:
    """Builds :class:`Uniformer` from the config keys the original builder reads.

    Reads MODEL.NUM_CLASSES, MODEL.USE_CHECKPOINT, MODEL.CHECKPOINT_NUM, DATA.INPUT_CHANNEL_NUM[0] and
    UNIFORMER.{DEPTH, EMBED_DIM, HEAD_DIM, MLP_RATIO, QKV_BIAS, QKV_SCALE, REPRESENTATION_SIZE,
    DROPOUT_RATE, ATTENTION_DROPOUT_RATE, DROP_DEPTH_RATE, SPLIT, STD}. UNIFORMER.NUM_HEADS is not read:
    heads are EMBED_DIM[i] // HEAD_DIM. Pretrained weights (UNIFORMER.PRETRAIN_NAME) are the checkpoint
    loader's business.
    """
    u = cfg.UNIFORMER
    return Uniformer(
        num_classes=cfg.MODEL.NUM_CLASSES,
        in_chans=cfg.DATA.INPUT_CHANNEL_NUM[0],
        depth=u.DEPTH,
        embed_dim=u.EMBED_DIM,
        head_dim=u.HEAD_DIM,
        mlp_ratio=u.MLP_RATIO,
        qkv_bias=u.QKV_BIAS,
        qk_scale=u.QKV_SCALE,
        representation_size=u.REPRESENTATION_SIZE,
        drop_rate=u.DROPOUT_RATE,
        attn_drop_rate=u.ATTENTION_DROPOUT_RATE,
        drop_path_rate=u.DROP_DEPTH_RATE,
        split=u.SPLIT,
        std=u.STD,
        use_checkpoint=cfg.MODEL.USE_CHECKPOINT,
        checkpoint_num=cfg.MODEL.CHECKPOINT_NUM,
    )
