"""MViT v1 against the original's parity fixture and the full-size MViT-B-24 manifest."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from nightcrawler.config import get_cfg, set_flat
from nightcrawler.models import layers
from nightcrawler.models.mvit import MViT, mvit_block_specs, mvit_from_cfg, round_width
from tests.conftest import parity_dir


def _fixture_path(name: str):
    path = parity_dir() / name
    if not path.is_file():
        pytest.skip(
            f"parity data {path} not found (check out ../shared/parity or set NIGHTCRAWLER_PARITY_DIR)"
        )
    return path


@pytest.fixture(scope="module")
def fx() -> dict:
    return torch.load(_fixture_path("mvit_tiny.pt"), weights_only=True)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(_fixture_path("manifests/manifest_mvit_b32_k600.json").read_text())


def _cfg(flat: dict, **overrides):
    cfg = get_cfg()
    set_flat(cfg, {**flat, **overrides})
    return cfg


def _within(ours: torch.Tensor, ref: torch.Tensor, bound: float) -> None:
    diff = (ours - ref).abs().max().item()
    limit = bound * max(1.0, ref.abs().max().item())
    assert diff <= limit, f"max |ours - ref| = {diff:.3g} > {limit:.3g}"


def _loaded(fx: dict, **overrides) -> MViT:
    model = mvit_from_cfg(_cfg(fx["cfg"], **overrides))
    model.load_state_dict(fx["state_dict"], strict=True)
    return model


def _kv_strides(specs) -> list[list[int]]:
    return [[i, *(s.stride_kv or (1, 1, 1))] for i, s in enumerate(specs)]


def test_fixture_integrity():
    entries = {e["file"]: e for e in json.loads(_fixture_path("index.json").read_text())["fixtures"]}
    if "mvit_tiny.pt" in entries:
        digest = hashlib.sha256(_fixture_path("mvit_tiny.pt").read_bytes()).hexdigest()
        assert digest == entries["mvit_tiny.pt"]["sha256"]


def test_state_dict_layout_and_derived_kv_strides(fx):
    cfg = _cfg(fx["cfg"])
    model = mvit_from_cfg(cfg)
    ours = model.state_dict()
    assert list(ours) == list(fx["state_dict"])
    for key, ref in fx["state_dict"].items():
        assert ours[key].shape == ref.shape and ours[key].dtype == ref.dtype, key
    model.load_state_dict(fx["state_dict"], strict=True)
    derived = next(v for k, v in fx["derived"].items() if k.startswith("MVIT.POOL_KV_STRIDE"))
    assert _kv_strides(model.block_specs) == derived
    assert cfg.MVIT.POOL_KV_STRIDE == fx["cfg"]["MVIT.POOL_KV_STRIDE"]  # the cfg is left alone


def test_eval_probabilities_logits_and_intermediates_match_original(fx):
    model = _loaded(fx).eval()
    captured = {}
    for name in fx["intermediates"]:
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(
                name, out[0] if isinstance(out, tuple) else out
            )
        )
    model.head.projection.register_forward_hook(lambda _m, _i, out: captured.__setitem__("logits", out))
    with torch.no_grad():
        probs = model(fx["inputs"])
    tol = fx["tolerance"]
    _within(captured["logits"], fx["logits"], tol["logits_max_abs"])
    _within(probs, fx["output_eval"], tol["logits_max_abs"])
    _within(probs, fx["probs_eval"], tol["logits_max_abs"])
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(probs.shape[0]))
    for name, ref in fx["intermediates"].items():
        assert captured[name].shape == ref.shape, name
        rel = ((captured[name] - ref).abs().max() / ref.abs().max()).item()
        assert rel <= tol["intermediates_rel"], f"{name}: relative error {rel:.3g}"


def test_train_mode_returns_logits(fx):
    no_drop = {"MVIT.DROPPATH_RATE": 0.0, "MODEL.DROPOUT_RATE": 0.0, "MVIT.DROPOUT_RATE": 0.0}
    model = _loaded(fx, **no_drop).train()
    with torch.no_grad():
        out = model(fx["inputs"][0])
    _within(out, fx["logits"], fx["tolerance"]["logits_max_abs"])


def test_explicit_attention_matches_fused(fx):
    model = _loaded(fx).eval()
    model.head.projection.register_forward_hook(lambda _m, _i, out: outs.append(out))
    outs = []
    with torch.no_grad():
        model(fx["inputs"])
        with layers.explicit_attention():
            model(fx["inputs"])
    _within(outs[1], outs[0], 1e-5)


def test_head_dropout_then_projection(fx):
    model = mvit_from_cfg(_cfg(fx["cfg"]))
    assert list(model.head._modules) == ["dropout", "projection", "act"]
    assert model.head.dropout.p == fx["cfg"]["MODEL.DROPOUT_RATE"]
    no_dropout = mvit_from_cfg(_cfg(fx["cfg"], **{"MODEL.DROPOUT_RATE": 0.0}))
    assert not hasattr(no_dropout.head, "dropout")
    sigmoid = mvit_from_cfg(_cfg(fx["cfg"], **{"MODEL.HEAD_ACT": "sigmoid"}))
    assert isinstance(sigmoid.head.act, torch.nn.Sigmoid)
    with pytest.raises(ValueError, match="MODEL.HEAD_ACT"):
        mvit_from_cfg(_cfg(fx["cfg"], **{"MODEL.HEAD_ACT": "relu"}))


def test_norm_eps_pooling_and_gelu(fx):
    model = mvit_from_cfg(_cfg(fx["cfg"]))
    assert model.norm.eps == 1e-6
    for i, block in enumerate(model.blocks):
        spec = model.block_specs[i]
        assert block.norm1.eps == 1e-6 and block.norm2.eps == 1e-6
        assert block.mlp.fc1.in_features == spec.dim and block.mlp.fc1.out_features == int(spec.dim * 4.0)
        assert block.mlp.fc2.out_features == spec.dim_out
        assert block.mlp.act.approximate == "none"
        assert hasattr(block, "proj") == (spec.dim != spec.dim_out)
        for which in ("q", "k", "v"):
            norm = getattr(block.attn, f"norm_{which}")
            if norm is not None:
                assert norm.eps == 1e-5
        if spec.stride_q:
            pool = block.pool_skip
            assert list(pool.kernel_size) == [s + 1 if s > 1 else s for s in spec.stride_q]
            assert list(pool.padding) == [k // 2 for k in pool.kernel_size]


def test_inputs_must_match_config(fx):
    model = mvit_from_cfg(_cfg(fx["cfg"])).eval()
    frames, crop = fx["cfg"]["DATA.NUM_FRAMES"], fx["cfg"]["DATA.TRAIN_CROP_SIZE"]
    with pytest.raises(ValueError, match="DATA.NUM_FRAMES"):
        model(torch.zeros(1, 3, frames * 2, crop, crop))
    with pytest.raises(ValueError, match="DATA.TRAIN_CROP_SIZE"):
        model([torch.zeros(1, 3, frames, crop + 32, crop + 32)])
    with pytest.raises(ValueError, match="TRAIN_CROP_SIZE == DATA.TEST_CROP_SIZE"):
        mvit_from_cfg(_cfg(fx["cfg"], **{"DATA.TEST_CROP_SIZE": crop + 32}))
    with pytest.raises(NotImplementedError, match="MVIT.PATCH_2D"):
        mvit_from_cfg(_cfg(fx["cfg"], **{"MVIT.PATCH_2D": True}))
    with pytest.raises(ValueError, match="MVIT.PATCH_PADDING"):
        mvit_from_cfg(_cfg(fx["cfg"], **{"MVIT.PATCH_PADDING": [2, 4, 4]}))


def test_activation_checkpointing_is_neutral(fx, monkeypatch):
    no_drop = {"MVIT.DROPPATH_RATE": 0.0, "MODEL.DROPOUT_RATE": 0.0}
    x = fx["inputs"][0][:1]
    results = []
    for use in (False, True):
        model = _loaded(fx, **no_drop, **{"MODEL.ACT_CHECKPOINT": use}).train()
        calls = []
        real = torch.utils.checkpoint.checkpoint

        def counting(fn, *args, _calls=calls, _real=real, **kwargs):
            _calls.append(kwargs.get("use_reentrant"))
            return _real(fn, *args, **kwargs)

        monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
        out = model(x)
        out.square().sum().backward()
        assert calls == ([False] * len(model.blocks) if use else [])
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        monkeypatch.undo()
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-6)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_no_weight_decay_names(fx):
    on = mvit_from_cfg(_cfg(fx["cfg"], **{"MVIT.ZERO_DECAY_POS_CLS": True}))
    assert on.no_weight_decay() == {"cls_token", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class"}
    assert mvit_from_cfg(_cfg(fx["cfg"], **{"MVIT.ZERO_DECAY_POS_CLS": False})).no_weight_decay() == set()


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_parameter_free_pooling_modes(fx, mode):
    model = mvit_from_cfg(_cfg(fx["cfg"], **{"MVIT.MODE": mode})).eval()
    assert not any(".pool_" in k or ".norm_q" in k or ".norm_k" in k for k in model.state_dict())
    with torch.no_grad():
        out = model(fx["inputs"])
    assert out.shape == fx["output_eval"].shape


def test_single_position_table_and_no_class_token(fx):
    model = mvit_from_cfg(_cfg(fx["cfg"], **{"MVIT.SEP_POS_EMBED": False, "MVIT.CLS_EMBED_ON": False})).eval()
    grid = model.patch_dims[0] * model.patch_dims[1] * model.patch_dims[2]
    assert model.pos_embed.shape == (1, grid, fx["cfg"]["MVIT.EMBED_DIM"])
    assert "cls_token" not in model.state_dict()
    with torch.no_grad():
        assert model(fx["inputs"]).shape == fx["output_eval"].shape


def test_round_width():
    assert round_width(96, 2.0, divisor=2) == 192
    assert round_width(1, 2.0) == 2
    assert round_width(64, 1.0) == 64
    assert round_width(30, 1.5, divisor=8) == 48  # 45 rounds to 48
    assert round_width(10, 0.1, divisor=4) == 1  # never below min_width (default 1) ...
    assert round_width(10, 0.1, min_width=0, divisor=4) == 4  # ... or the divisor when min_width is 0


def test_explicit_kv_strides_and_kernel_override():
    specs = mvit_block_specs(
        depth=3, embed_dim=8, num_heads=1, pool_q_stride=[[1, 1, 2, 2]],
        pool_kv_stride=[[0, 1, 2, 2], [2, 2, 1, 1]], pool_kvq_kernel=[3, 3, 3],
    )  # fmt: skip
    assert [s.stride_kv for s in specs] == [(1, 2, 2), (), (2, 1, 1)]
    assert [s.kernel_kv for s in specs] == [(3, 3, 3), (), (3, 3, 3)]
    assert specs[1].kernel_q == (3, 3, 3) and specs[1].stride_q == (1, 2, 2)
    with pytest.raises(ValueError, match="MVIT.POOL_Q_STRIDE"):
        mvit_block_specs(depth=2, embed_dim=8, num_heads=1, pool_q_stride=[[2, 1, 2, 2]])


def test_full_size_mvit_b24_matches_manifest(manifest):
    with torch.device("meta"):
        model = mvit_from_cfg(_cfg(manifest["cfg"]))
    ours = [
        {"key": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in model.state_dict().items()
    ]
    assert ours == [{k: e[k] for k in ("key", "shape", "dtype")} for e in manifest["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
    assert sum(b.numel() for b in model.buffers()) == manifest["num_buffer_elements"]
    derived = manifest["derived"]
    assert _kv_strides(model.block_specs) == next(
        v for k, v in derived.items() if k.startswith("MVIT.POOL_KV")
    )
    for row, spec in zip(derived["per_block"], model.block_specs, strict=True):
        q_pool = [list(spec.kernel_q), list(spec.stride_q)] if spec.kernel_q else None
        has_kv = spec.kernel_kv and (max(spec.kernel_kv) > 1 or max(spec.stride_kv) > 1)
        kv_pool = [list(spec.kernel_kv), list(spec.stride_kv)] if has_kv else None
        assert (spec.dim, spec.dim_out, spec.num_heads, q_pool, kv_pool) == (
            row["dim"], row["dim_out"], row["heads"], row["q_pool"], row["kv_pool"],
        ), row["block"]  # fmt: skip
        assert hasattr(model.blocks[row["block"]], "proj") == row["has_proj"]
