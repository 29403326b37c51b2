"""torchvision's ``mvit_v1_b`` weights converted into our MViT-B 16x4 (``configs/models/mvit_b16x4.yaml``).

The torchvision model is randomly initialised (seeded) and saved as ``torch.save(model.state_dict())``, the way
its Kinetics-400 file is stored. Both models see the same float32 clip (B, C, T, H, W) in eval mode. Ours
returns softmax probabilities in eval mode (the original's head), torchvision's returns logits: the logits are
compared at our head's projection (before its softmax), and our probabilities with torchvision's logits'
softmax.
"""

from __future__ import annotations

import re

import pytest
import torch

from nightcrawler.config import load_config
from nightcrawler.models import build_model
from nightcrawler.models.checkpoint import CheckpointError, guess_architecture, load_pretrained
from nightcrawler.utils.errors import EXIT_CHECKPOINT
from tests.conftest import REPO_ROOT, load_tool

CONFIGS = REPO_ROOT / "configs" / "models"
MVIT_B16X4 = CONFIGS / "mvit_b16x4.yaml"
MVIT_V1_B_PARAMETERS = 36_610_672
MVIT_V1_B_KEYS = 313


def _cfg(*opts):
    return load_config(str(MVIT_B16X4), ["NUM_GPUS", 0, *opts])


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _eval_logits_and_probabilities(model, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our eval forward: the logits read at the head's projection, and the softmax the head returns."""
    captured = {}
    handle = model.head.projection.register_forward_hook(lambda _m, _i, out: captured.update(logits=out))
    model.eval()
    with torch.no_grad():
        probabilities = model(clip)
    handle.remove()
    return captured["logits"], probabilities


@pytest.fixture(scope="module")
def tool():
    return load_tool("convert_checkpoint")


@pytest.fixture(scope="module")
def torchvision_mvit(tmp_path_factory) -> dict:
    """A seeded mvit_v1_b saved as a plain state dict, one clip and torchvision's eval logits for it."""
    video_models = pytest.importorskip("torchvision.models.video")
    torch.manual_seed(0)
    model = video_models.mvit_v1_b(weights=None).eval()
    path = tmp_path_factory.mktemp("torchvision") / "mvit_v1_b.pth"
    torch.save(model.state_dict(), path)
    clip = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        logits = model(clip)
    return {"path": path, "clip": clip, "logits": logits, "parameters": _parameters(model)}


@pytest.fixture(scope="module")
def converted(tool, torchvision_mvit, tmp_path_factory) -> dict:
    """The torchvision file converted by the tool's function (strict)."""
    out = tmp_path_factory.mktemp("converted") / "mvit_b16x4_k400.pyth"
    report = tool.convert_checkpoint(torchvision_mvit["path"], out, _cfg())
    return {"path": out, "report": report, "state": torch.load(out, weights_only=True)["model_state"]}


def test_every_key_maps(converted):
    report = converted["report"]
    assert report.clean and not report.dropped and not report.inflated
    assert report.source_format == "torchvision" and report.checkpoint_arch == "MViT"
    assert len(report.loaded) == len(converted["state"]) == MVIT_V1_B_KEYS


def test_converted_logits_match_torchvision(torchvision_mvit, converted):
    model = build_model(_cfg())
    assert _parameters(model) == torchvision_mvit["parameters"] == MVIT_V1_B_PARAMETERS
    model.load_state_dict(converted["state"], strict=True)
    logits, probabilities = _eval_logits_and_probabilities(model, torchvision_mvit["clip"])
    reference = torchvision_mvit["logits"]
    assert logits.shape == reference.shape == (1, 400)
    assert _max_diff(logits, reference) <= 1e-5
    assert _max_diff(probabilities, reference.softmax(dim=1)) <= 1e-6


def test_pyslowfast_pool_norm_eps_moves_the_logits(torchvision_mvit, converted):
    """The same weights with PySlowFast's 1e-5 on the pooled q/k/v LayerNorms: MVIT.POOL_NORM_EPS matters."""
    model = build_model(_cfg("MVIT.POOL_NORM_EPS", 1e-5))
    assert model.blocks[0].attn.norm_k.eps == 1e-5
    model.load_state_dict(converted["state"], strict=True)
    logits, _ = _eval_logits_and_probabilities(model, torchvision_mvit["clip"])
    assert _max_diff(logits, torchvision_mvit["logits"]) > 1e-5


def test_convert_tool_main(tool, torchvision_mvit, converted, tmp_path, capsys):
    out = tmp_path / "mvit_b16x4_k400.pyth"
    argv = ["--cfg", str(MVIT_B16X4), "--input", str(torchvision_mvit["path"]), "--output", str(out)]
    assert tool.main(argv) == 0
    assert f"{MVIT_V1_B_KEYS} tensors loaded from" in capsys.readouterr().out
    written = torch.load(out, weights_only=True)
    assert written["epoch"] == -1 and "POOL_NORM_EPS: 1.0e-06" in written["cfg"]
    state = written["model_state"]
    assert state.keys() == converted["state"].keys()
    for key, value in converted["state"].items():
        assert torch.equal(state[key], value), key


def test_torchvision_file_for_a_uniformer_config_is_refused(tool, torchvision_mvit, tmp_path):
    path = torchvision_mvit["path"]
    cfg = load_config(str(CONFIGS / "uniformer_tiny.yaml"), ["NUM_GPUS", 0])
    out = tmp_path / "uniformer.pyth"
    expected = (
        rf"{re.escape(str(path))} seems to hold weights for MViT, but the model being loaded is Uniformer"
    )
    with pytest.raises(CheckpointError, match=expected):
        tool.convert_checkpoint(path, out, cfg)
    argv = ["--cfg", str(CONFIGS / "uniformer_tiny.yaml"), "--input", str(path), "--output", str(out)]
    assert tool.main(argv) == EXIT_CHECKPOINT and not out.exists()


def test_torchvision_mvit_v2_is_refused(tmp_path):
    """mvit_v2_s (relative position embeddings, residual pooling) is not our MViT v1: named, not half-loaded."""
    v2 = {
        "conv_proj.weight": torch.zeros(96, 3, 3, 7, 7),
        "conv_proj.bias": torch.zeros(96),
        "pos_encoding.class_token": torch.zeros(96),
        "blocks.0.attn.rel_pos_h": torch.zeros(111, 96),
    }
    assert guess_architecture(v2).startswith("torchvision MViT v2")
    path = tmp_path / "mvit_v2_s.pth"
    torch.save(v2, path)
    model = build_model(load_config(str(CONFIGS / "mvit_tiny.yaml"), ["NUM_GPUS", 0]))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: torchvision MViT v2 .*mvit_v1_b"):
        load_pretrained(model, path)
