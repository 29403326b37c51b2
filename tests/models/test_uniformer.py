"""UniFormer against the original's parity fixtures (tiny model, full-size manifest, 2-D -> 3-D inflation)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from nightcrawler.config import get_cfg, set_flat
from nightcrawler.models import layers
from nightcrawler.models.uniformer import (
    CBlock,
    SABlock,
    SplitSABlock,
    Uniformer,
    inflate_uniformer_2d_state_dict,
    uniformer_from_cfg,
)
from tests.conftest import parity_dir


def _fixture_path(name: str):
    path = parity_dir() / name
    if not path.is_file():
        pytest.skip(
            f"parity data {path} not found (check out ../shared/parity or set NIGHTCRAWLER_PARITY_DIR)"
        )
    return path


def _load(name: str) -> dict:
    return torch.load(_fixture_path(name), weights_only=True)


@pytest.fixture(scope="module")
def fx() -> dict:
    return _load("uniformer_tiny.pt")


def _cfg(flat: dict, **overrides):
    cfg = get_cfg()
    set_flat(cfg, {**flat, **overrides})
    return cfg


def _within(ours: torch.Tensor, ref: torch.Tensor, bound: float) -> None:
    diff = (ours - ref).abs().max().item()
    limit = bound * max(1.0, ref.abs().max().item())
    assert diff <= limit, f"max |ours - ref| = {diff:.3g} > {limit:.3g}"


def _loaded(fx: dict, **overrides) -> Uniformer:
    model = uniformer_from_cfg(_cfg(fx["cfg"], **overrides))
    model.load_state_dict(fx["state_dict"], strict=True)
    return model


def test_fixture_integrity():
    index_path = _fixture_path("index.json")
    entries = {e["file"]: e for e in json.loads(index_path.read_text())["fixtures"]}
    for name in ("uniformer_tiny.pt", "uniformer_tiny_inflation.pt"):
        if name in entries:
            digest = hashlib.sha256(_fixture_path(name).read_bytes()).hexdigest()
            assert digest == entries[name]["sha256"], f"{name} differs from index.json"


def test_state_dict_layout_matches_original(fx):
    model = uniformer_from_cfg(_cfg(fx["cfg"]))
    ours = model.state_dict()
    assert list(ours) == list(fx["state_dict"])
    for key, ref in fx["state_dict"].items():
        assert ours[key].shape == ref.shape and ours[key].dtype == ref.dtype, key
    model.load_state_dict(fx["state_dict"], strict=True)


def test_heads_come_from_head_dim_not_num_heads(fx):
    derived = next(v for k, v in fx["derived"].items() if k.startswith("num_heads_per_stage"))
    model = uniformer_from_cfg(_cfg(fx["cfg"]))
    assert model.num_heads == derived
    assert [blk.attn.num_heads for blk in model.blocks3] == [derived[2]] * len(model.blocks3)
    assert [blk.attn.num_heads for blk in model.blocks4] == [derived[3]] * len(model.blocks4)
    other = uniformer_from_cfg(_cfg(fx["cfg"], **{"UNIFORMER.NUM_HEADS": [3, 3, 3, 3]}))
    assert other.num_heads == derived


def test_eval_logits_and_intermediates_match_original(fx):
    model = _loaded(fx).eval()
    captured = {}
    for name in fx["intermediates"]:
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out)
        )
    with torch.no_grad():
        out = model(fx["inputs"])
    tol = fx["tolerance"]
    assert out.shape == fx["output_eval"].shape
    _within(out, fx["logits"], tol["logits_max_abs"])
    _within(out, fx["output_eval"], tol["logits_max_abs"])
    for name, ref in fx["intermediates"].items():
        assert captured[name].shape == ref.shape, name
        rel = ((captured[name] - ref).abs().max() / ref.abs().max()).item()
        assert rel <= tol["intermediates_rel"], f"{name}: relative error {rel:.3g}"


def test_list_and_tensor_inputs_agree_and_explicit_attention_matches(fx):
    model = _loaded(fx).eval()
    x = fx["inputs"][0]
    with torch.no_grad():
        fused = model(x)
        torch.testing.assert_close(model([x]), fused, rtol=0, atol=0)
        with layers.explicit_attention():
            explicit = model(x)
    _within(explicit, fused, 1e-5)


def test_train_mode_logits_and_bn_adaptation_match_original(fx):
    model = _loaded(fx, **{"UNIFORMER.DROP_DEPTH_RATE": 0.0, "UNIFORMER.DROPOUT_RATE": 0.0}).train()
    with torch.no_grad():
        out = model(fx["inputs"])
    tol = fx["tolerance"]
    _within(out, fx["logits_train_mode"], tol["train_mode_logits_max_abs"])
    state = model.state_dict()
    for key, ref in fx["bn_buffers_after_train_forward"].items():
        if key.endswith("num_batches_tracked"):
            assert state[key].item() == ref.item(), key
        else:
            assert (state[key] - ref).abs().max().item() <= tol["bn_buffers_max_abs"], key


def test_norm_eps_and_exact_gelu(fx):
    model = uniformer_from_cfg(_cfg(fx["cfg"]))
    for i in range(1, 5):
        assert getattr(model, f"patch_embed{i}").norm.eps == 1e-5
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm) and ".norm" in name and name.startswith("blocks"):
            assert module.eps == 1e-6, name
        if isinstance(module, torch.nn.BatchNorm3d):
            assert module.eps == 1e-5 and module.momentum == 0.1, name
        if isinstance(module, torch.nn.GELU):
            assert module.approximate == "none", name
    assert all(isinstance(b, CBlock) for b in [*model.blocks1, *model.blocks2])
    assert all(isinstance(b, SABlock) for b in [*model.blocks3, *model.blocks4])


def test_stochastic_depth_grows_linearly(fx):
    model = uniformer_from_cfg(_cfg(fx["cfg"], **{"UNIFORMER.DROP_DEPTH_RATE": 0.3}))
    blocks = [*model.blocks1, *model.blocks2, *model.blocks3, *model.blocks4]
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    expected = torch.linspace(0, 0.3, len(blocks)).tolist()
    assert rates == pytest.approx(expected)
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)


def test_gradient_checkpointing_only_in_training_and_numerically_neutral(fx, monkeypatch):
    flat = {**fx["cfg"], "UNIFORMER.DROP_DEPTH_RATE": 0.0}
    depth = flat["UNIFORMER.DEPTH"]
    x = fx["inputs"][0][:1]
    grads, outputs = [], []
    for use in (False, True):
        model = _loaded(fx, **{"UNIFORMER.DROP_DEPTH_RATE": 0.0, "MODEL.USE_CHECKPOINT": use})
        model.checkpoint_num = [1, 1, 1, 1] if use else [0, 0, 0, 0]
        calls = []
        real = torch.utils.checkpoint.checkpoint

        def counting(fn, *args, _calls=calls, _real=real, **kwargs):
            _calls.append(kwargs.get("use_reentrant"))
            return _real(fn, *args, **kwargs)

        monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
        model.eval()
        with torch.no_grad():
            model(x)
        assert calls == []  # never in eval mode
        model.train()
        out = model(x)
        out.square().sum().backward()
        assert calls == ([False] * sum(min(1, d) for d in depth) if use else [])
        outputs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        monkeypatch.undo()
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_bad_input_is_rejected(fx):
    model = uniformer_from_cfg(_cfg(fx["cfg"])).eval()
    with pytest.raises(ValueError, match=r"expects input \(N, 3, T, H, W\)"):
        model(torch.zeros(1, 3, 8, 32))
    with pytest.raises(ValueError, match="got shape"):
        model([torch.zeros(1, 4, 8, 32, 32)])


def test_std_keeps_time_with_three_frame_kernels(fx):
    model = uniformer_from_cfg(_cfg(fx["cfg"], **{"UNIFORMER.STD": True})).eval()
    for i in (2, 3, 4):
        proj = getattr(model, f"patch_embed{i}").proj
        assert proj.kernel_size == (3, 2, 2) and proj.stride == (1, 2, 2) and proj.padding == (1, 0, 0)
    grids = []
    for i in range(1, 5):
        getattr(model, f"patch_embed{i}").register_forward_hook(
            lambda _m, _i, out: grids.append(out.shape[2:])
        )
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 64, 64))
    assert out.shape == (1, fx["cfg"]["MODEL.NUM_CLASSES"])
    assert [tuple(g) for g in grids] == [(4, 16, 16), (4, 8, 8), (4, 4, 4), (4, 2, 2)]


def _split_block_by_loops(block: SplitSABlock, x: torch.Tensor) -> torch.Tensor:
    """Divided attention written out per pixel and per frame, for comparison."""
    x = x + block.pos_embed(x)
    _, _, t, h, w = x.shape
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        temporal = torch.empty(t, h, w, x.shape[1])
        for i in range(h):
            for j in range(w):
                seq = x[b, :, :, i, j].T[None]  # (1, T, C)
                temporal[:, i, j] = (seq + block.t_attn(block.t_norm(seq)))[0]
        for f in range(t):
            frame_in = x[b, :, f].flatten(1).T[None]  # (1, HW, C): the residual
            frame_tokens = temporal[f].reshape(1, h * w, -1)
            mixed = frame_in + block.attn(block.norm1(frame_tokens))
            mixed = mixed + block.mlp(block.norm2(mixed))
            out[b, :, f] = mixed[0].T.reshape(-1, h, w)
    return out


def test_split_attention_blocks(fx):
    model = uniformer_from_cfg(_cfg(fx["cfg"], **{"UNIFORMER.SPLIT": True})).eval()
    assert all(isinstance(b, SplitSABlock) for b in [*model.blocks3, *model.blocks4])
    keys = [k for k in model.state_dict() if k.startswith("blocks3.0.")]
    assert keys[:6] == [
        "blocks3.0.pos_embed.weight", "blocks3.0.pos_embed.bias", "blocks3.0.t_norm.weight",
        "blocks3.0.t_norm.bias", "blocks3.0.t_attn.qkv.weight", "blocks3.0.t_attn.qkv.bias",
    ]  # fmt: skip
    block = model.blocks3[0]
    assert torch.count_nonzero(block.t_attn.qkv.weight) == 0 and torch.all(block.t_attn.proj.weight == 1)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        x = torch.randn(2, block.norm1.normalized_shape[0], 3, 2, 2)
        torch.testing.assert_close(block(x), _split_block_by_loops(block, x), rtol=1e-5, atol=1e-5)
        assert model(torch.randn(1, 3, 8, 64, 64)).shape == (1, fx["cfg"]["MODEL.NUM_CLASSES"])


def test_representation_layer(fx):
    model = uniformer_from_cfg(_cfg(fx["cfg"], **{"UNIFORMER.REPRESENTATION_SIZE": 8})).eval()
    assert model.pre_logits.fc.out_features == 8 and model.head.in_features == 8
    with torch.no_grad():
        assert model(fx["inputs"]).shape == fx["logits"].shape


def test_full_size_uniformer_b32_matches_manifest():
    manifest = json.loads(_fixture_path("manifests/manifest_uniformer_b32_k600.json").read_text())
    with torch.device("meta"):
        model = uniformer_from_cfg(_cfg(manifest["cfg"]))
    ours = [
        {"key": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in model.state_dict().items()
    ]
    assert ours == [{k: e[k] for k in ("key", "shape", "dtype")} for e in manifest["state_dict"]]
    params = dict(model.named_parameters())
    assert [e["key"] for e in manifest["state_dict"] if e["kind"] == "parameter"] == list(params)
    assert sum(p.numel() for p in params.values()) == manifest["num_parameters"]
    assert sum(b.numel() for b in model.buffers()) == manifest["num_buffer_elements"]
    heads = next(v for k, v in manifest["derived"].items() if k.startswith("num_heads_per_stage"))
    assert model.num_heads == heads


# ---------------------------------------------------------------------------------------------------- inflation
@pytest.fixture(scope="module")
def inflation() -> dict:
    return _load("uniformer_tiny_inflation.pt")


def test_inflation_reproduces_original_hook(inflation):
    model = uniformer_from_cfg(_cfg(inflation["cfg"]))
    result = inflate_uniformer_2d_state_dict(inflation["state_dict_2d"], model.state_dict())
    ref = inflation["state_dict_3d"]
    assert list(result) == list(ref)
    for key, tensor in ref.items():
        assert result[key].dtype == tensor.dtype and torch.equal(result[key], tensor), key
    source = inflation["state_dict_2d"]
    assert [k for k in result if result[k].shape != source[k].shape] == inflation["inflated_keys"]
    assert sorted(set(source) - set(result)) == sorted(inflation["dropped_keys"])
    missing, unexpected = model.load_state_dict(result, strict=False)
    assert sorted(missing) == sorted(inflation["missing_keys_after_load"])
    assert list(unexpected) == list(inflation["unexpected_keys_after_load"])
    assert source["patch_embed1.proj.weight"].dim() == 4  # the input is not modified


def test_inflation_unwraps_containers_and_rejects_bad_input(inflation):
    model_sd = uniformer_from_cfg(_cfg(inflation["cfg"])).state_dict()
    plain = inflate_uniformer_2d_state_dict(inflation["state_dict_2d"], model_sd)
    for container in ("model", "model_state"):
        wrapped = inflate_uniformer_2d_state_dict({container: inflation["state_dict_2d"]}, model_sd)
        assert list(wrapped) == list(plain)
    with pytest.raises(KeyError, match="not_a_layer.weight"):
        inflate_uniformer_2d_state_dict(
            {**inflation["state_dict_2d"], "not_a_layer.weight": torch.zeros(1)}, model_sd
        )
    bad = dict(inflation["state_dict_2d"])
    bad["blocks1.0.attn.weight"] = torch.zeros(7, 1, 5, 5)
    with pytest.raises(ValueError, match=r"cannot inflate blocks1\.0\.attn\.weight"):
        inflate_uniformer_2d_state_dict(bad, model_sd)
    # a classifier of the model's class count is kept
    same_head = dict(inflation["state_dict_2d"])
    same_head["head.weight"] = torch.zeros_like(model_sd["head.weight"])
    same_head["head.bias"] = torch.zeros_like(model_sd["head.bias"])
    assert "head.weight" in inflate_uniformer_2d_state_dict(same_head, model_sd)
