"""Model speed-ups (nightcrawler.models.speed): channels-last-3d and in-place torch.compile keep the weights,
their keys and the outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from nightcrawler.config import ConfigError, assert_and_infer_cfg, load_config
from nightcrawler.models import build_model, unwrap_model
from nightcrawler.models.speed import compile_in_place, speed_up, speed_up_from_cfg
from tests.conftest import REPO_ROOT

TINY = {"Uniformer": "uniformer_tiny.yaml", "MViT": "mvit_tiny.yaml", "SF": "sf_tiny.yaml"}


def _cfg(name: str, *opts):
    return load_config(str(REPO_ROOT / "configs" / "models" / TINY[name]), ["NUM_GPUS", 0, *opts])


def _model_and_clip(name: str):
    cfg = _cfg(name, "MODEL.NUM_CLASSES", 5)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    crop = cfg.DATA.TEST_CROP_SIZE
    return cfg, model, torch.randn(2, 3, cfg.DATA.NUM_FRAMES, crop, crop)


def _conv3d_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv3d)]


@pytest.mark.parametrize("name", sorted(TINY))
def test_channels_last_keeps_weights_keys_and_outputs(name):
    _, model, x = _model_and_clip(name)
    eager = copy.deepcopy(model)
    assert speed_up(model, channels_last=True) is model
    weights = _conv3d_weights(model)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in weights)
    assert not any(w.is_contiguous() for w in weights if w.shape[1] > 1 and w[0, 0].numel() > 1)
    ours, theirs = model.state_dict(), eager.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        torch.testing.assert_close(model([x]), eager([x]), rtol=1e-4, atol=1e-5)
    # a checkpoint of the channels-last model loads strictly into a plain one, and back
    fresh = copy.deepcopy(eager)
    fresh.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(eager.state_dict(), strict=True)
    assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in _conv3d_weights(model))
    model.train()
    model([x]).sum().backward()
    assert any(w.grad is not None for w in _conv3d_weights(model))  # (SlowFast leaves some unused)


@pytest.mark.parametrize("name", ["SF", "Uniformer"])
def test_compile_in_place_traces_the_model_and_keeps_its_keys(name):
    """dynamo traces the whole model (aot_eager: the graphs run without code generation, so the test stays
    quick); the module object, its state_dict keys and its outputs stay those of the eager model."""
    torch._dynamo.reset()
    _, model, x = _model_and_clip(name)
    eager = copy.deepcopy(model)
    keys = list(model.state_dict())
    assert compile_in_place(model, backend="aot_eager") is model
    assert unwrap_model(model) is model and list(model.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(model([x]), eager([x]), rtol=1e-4, atol=1e-5)
    model.train()
    model([x]).sum().backward()
    torch._dynamo.reset()


def test_config_keys_choose_the_speed_ups():
    cfg = _cfg("SF", "MODEL.CHANNELS_LAST", True)
    model = build_model(cfg)
    speed_up_from_cfg(model, cfg)
    assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in _conv3d_weights(model))
    assert getattr(model, "_compiled_call_impl", None) is None  # MODEL.COMPILE is off by default
    with pytest.raises(ConfigError, match="MODEL.COMPILE_MODE = 'fastest' is not one of default"):
        assert_and_infer_cfg(_cfg("SF", "MODEL.COMPILE_MODE", "fastest"))
    with pytest.raises(ValueError, match="compile mode 'fastest'"):
        compile_in_place(model, "fastest")
