"""Shared transformer layers: fused SDPA attention equals the explicit softmax(QK^T)V form; Mlp variants."""

from __future__ import annotations

import math

import pytest
import torch

from nightcrawler.models.layers import (
    Attention,
    Mlp,
    explicit_attention,
    explicit_attention_enabled,
    multi_head_attention,
    set_explicit_attention,
)


def _reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-head loops in float64: softmax over keys of scaled dot products, then a weighted sum of values."""
    q, k, v = q.double(), k.double(), v.double()
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            logits = torch.stack([torch.stack([(qi * kj).sum() * scale for kj in k[b, h]]) for qi in q[b, h]])
            weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            weights = weights / weights.sum(dim=1, keepdim=True)
            out[b, h] = weights @ v[b, h]
    return out


@pytest.mark.parametrize(
    ("q_len", "kv_len", "head_dim", "scale"), [(7, 7, 8, None), (5, 11, 4, 0.37), (1, 3, 16, None)]
)
def test_fused_and_explicit_attention_match_reference(q_len, kv_len, head_dim, scale):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, q_len, head_dim, generator=gen)
    k = torch.randn(2, 3, kv_len, head_dim, generator=gen)
    v = torch.randn(2, 3, kv_len, head_dim, generator=gen)
    scale = scale if scale is not None else head_dim**-0.5
    ref = _reference_attention(q, k, v, scale)
    fused = multi_head_attention(q, k, v, scale=scale, explicit=False)
    explicit = multi_head_attention(q, k, v, scale=scale, explicit=True)
    assert fused.shape == (2, 3, q_len, head_dim)
    torch.testing.assert_close(fused.double(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(explicit.double(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-6)


def test_explicit_switch_is_global_and_restored():
    assert not explicit_attention_enabled()
    with explicit_attention():
        assert explicit_attention_enabled()
        with explicit_attention(False):
            assert not explicit_attention_enabled()
        assert explicit_attention_enabled()
    assert not explicit_attention_enabled()
    set_explicit_attention(True)
    try:
        assert explicit_attention_enabled()
    finally:
        set_explicit_attention(False)


def test_explicit_path_is_really_taken(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    q = torch.randn(1, 1, 4, 8)
    multi_head_attention(q, q, q, scale=0.5)
    assert len(calls) == 1
    with explicit_attention():
        multi_head_attention(q, q, q, scale=0.5)
    assert len(calls) == 1


def test_attention_module_fused_equals_explicit_and_shapes():
    torch.manual_seed(0)
    attn = Attention(dim=24, num_heads=3, qkv_bias=True, attn_drop=0.5, proj_drop=0.5).eval()
    x = torch.randn(2, 10, 24)
    with torch.no_grad():
        fused = attn(x)
        with explicit_attention():
            explicit = attn(x)
    assert fused.shape == (2, 10, 24)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-6)
    # eval mode ignores both dropouts: the result is deterministic
    with torch.no_grad():
        torch.testing.assert_close(attn(x), fused, rtol=0, atol=0)
    assert attn.scale == pytest.approx(8**-0.5)
    assert Attention(dim=24, num_heads=3, qk_scale=0.1).scale == pytest.approx(0.1)


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="not divisible"):
        Attention(dim=10, num_heads=3)


def test_mlp_linear_and_conv3d_agree_and_use_exact_gelu():
    torch.manual_seed(0)
    linear = Mlp(6, 12, 5).eval()
    conv = Mlp(6, 12, 5, conv3d=True).eval()
    assert [k for k in conv.state_dict()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    with torch.no_grad():
        conv.fc1.weight.copy_(linear.fc1.weight[:, :, None, None, None])
        conv.fc1.bias.copy_(linear.fc1.bias)
        conv.fc2.weight.copy_(linear.fc2.weight[:, :, None, None, None])
        conv.fc2.bias.copy_(linear.fc2.bias)
        x = torch.randn(2, 6, 3, 4, 4)
        out_conv = conv(x)
        out_linear = linear(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        torch.testing.assert_close(out_conv, out_linear, rtol=0, atol=1e-6)
        hidden = x.permute(0, 2, 3, 4, 1) @ linear.fc1.weight.T + linear.fc1.bias
        gelu = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2.0)))
        torch.testing.assert_close(
            out_linear.permute(0, 2, 3, 4, 1), gelu @ linear.fc2.weight.T + linear.fc2.bias
        )
