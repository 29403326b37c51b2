"""SlowFast (SF) parity with the original: state-dict layout, logits, train-mode BN, intermediates."""

from __future__ import annotations

import json

import pytest
import torch

from nightcrawler.config import get_cfg, set_flat
from nightcrawler.models.slowfast import FrozenBatchNorm3d, SlowFast, sf_from_cfg
from tests.conftest import parity_dir


def _load(name: str):
    path = parity_dir() / name
    if not path.is_file():
        pytest.skip(f"parity reference {path} is absent (set NIGHTCRAWLER_PARITY_DIR)")
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def fixture():
    return _load("sf_tiny.pt")


def _cfg(flat: dict, **overrides):
    cfg = get_cfg()
    set_flat(cfg, flat)
    set_flat(cfg, {"NUM_GPUS": 0, **overrides})
    return cfg


def _bound(ref: torch.Tensor) -> float:
    return 1e-4 * max(1.0, ref.abs().max().item())


@pytest.fixture(scope="module")
def model(fixture):
    m = sf_from_cfg(_cfg(fixture["cfg"]))
    m.load_state_dict(fixture["state_dict"], strict=True)
    return m.eval()


def test_state_dict_layout_matches_fixture(fixture, model):
    ours = model.state_dict()
    ref = fixture["state_dict"]
    assert list(ours) == list(ref)
    for k, v in ref.items():
        assert ours[k].shape == v.shape and ours[k].dtype == v.dtype, k


def test_eval_logits_match(fixture, model):
    with torch.no_grad():
        out = model(fixture["inputs"])
    ref = fixture["logits"]
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= _bound(ref)
    assert torch.equal(fixture["output_eval"], fixture["logits"])  # SF returns raw logits in eval


def test_intermediates_match(fixture, model):
    seen = {}
    handles = [
        model.get_submodule(name).register_forward_hook(lambda _m, _i, o, n=name: seen.__setitem__(n, o))
        for name in fixture["intermediates"]
    ]
    try:
        with torch.no_grad():
            model(fixture["inputs"][0])  # a bare tensor works as well as the original's list
    finally:
        for h in handles:
            h.remove()
    for name, ref in fixture["intermediates"].items():
        rel = (seen[name] - ref).abs().max().item() / ref.abs().max().item()
        assert rel <= 1e-4, f"{name}: relative error {rel:.2e}"


def test_train_mode_logits_and_bn_buffers(fixture):
    m = sf_from_cfg(_cfg(fixture["cfg"], **{"SF.DROPOUT_RATE": 0.0}))
    m.load_state_dict(fixture["state_dict"], strict=True)
    m.train()
    with torch.no_grad():
        out = m(fixture["inputs"])
    ref = fixture["logits_train_mode"]
    assert (out - ref).abs().max().item() <= _bound(ref)
    assert (out - fixture["logits"]).abs().max().item() > _bound(ref)  # batch statistics did matter
    ours = m.state_dict()
    for k, v in fixture["bn_buffers_after_train_forward"].items():
        if k.endswith("num_batches_tracked"):
            assert int(ours[k]) == int(v), k
        else:
            # The fixture's 1e-5, scaled like the logits bound: running variances reach ~20 here, where one
            # float32 ulp is 2e-6 and the batch variance's summation order (thread count) moves a few ulps.
            assert (ours[k] - v).abs().max().item() <= 1e-5 * max(1.0, v.abs().max().item()), k


def test_slow_pathway_takes_every_fourth_frame(fixture, model):
    x = fixture["inputs"][0]
    seen = {}
    h = model.slow.conv1.register_forward_hook(lambda _m, i, _o: seen.__setitem__("x", i[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    assert torch.equal(seen["x"], x[:, :, 0 : x.shape[2] : 4])
    with pytest.raises(ValueError, match="multiple of 4"):
        model(x[:, :, :-1])


def test_full_size_manifest():
    manifest = _load("manifests/manifest_sf32_k700.json")
    cfg = _cfg(manifest["cfg"])
    with torch.device("meta"):
        m = sf_from_cfg(cfg)
    params = dict(m.named_parameters())
    ours = [
        (k, list(v.shape), str(v.dtype).removeprefix("torch."), "parameter" if k in params else "buffer")
        for k, v in m.state_dict().items()
    ]
    ref = [(e["key"], e["shape"], e["dtype"], e["kind"]) for e in manifest["state_dict"]]
    assert ours == ref
    assert sum(p.numel() for p in params.values()) == manifest["num_parameters"]
    assert len(ours) == manifest["state_dict_num_entries"]

    set_flat(cfg, {"SF.FROZEN_BN": True})
    with torch.device("meta"):
        frozen = sf_from_cfg(cfg)
    expected = [(k, s) for k, s, _, _ in ref if not k.endswith("num_batches_tracked")]
    assert [(k, list(v.shape)) for k, v in frozen.state_dict().items()] == expected
    frozen_params = {k for k, _ in frozen.named_parameters()}
    assert not any(".bn" in k for k in frozen_params)  # BN weight/bias became buffers


def test_frozen_bn_loads_trainable_weights_and_ignores_batch_statistics(fixture):
    m = sf_from_cfg(_cfg(fixture["cfg"], **{"SF.FROZEN_BN": True, "SF.DROPOUT_RATE": 0.0}))
    m.load_state_dict(fixture["state_dict"], strict=True)  # num_batches_tracked entries are dropped
    assert isinstance(m.slow.bn1, FrozenBatchNorm3d)
    m.train()
    with torch.no_grad():
        out = m(fixture["inputs"])
    ref = fixture["logits"]  # eval-mode output: frozen BN never uses batch statistics
    assert (out - ref).abs().max().item() <= _bound(ref)
    assert torch.equal(m.slow.bn1.running_mean, fixture["state_dict"]["slow.bn1.running_mean"])


def test_fast_res5_gets_no_gradient_and_depth50_pattern():
    m = SlowFast(num_classes=3, depth=50, width=8)
    assert [len(m.slow.stage(i)) for i in range(4)] == [3, 4, 6, 3]
    m(torch.randn(2, 3, 8, 32, 32)).sum().backward()
    assert all(p.grad is None for p in m.fast.res_nl4.parameters())
    assert all(p.grad is not None for p in m.fast.res_nl3.parameters())
    assert all(p.grad is not None for p in m.slow.parameters())
    with pytest.raises(ValueError, match="depth"):
        SlowFast(num_classes=3, depth=34)
    with pytest.raises(ValueError, match="multiple of 8"):
        SlowFast(num_classes=3, width=12)
