"""tools/flops.py: parameter and fvcore FLOP counts against the original's manifests."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from torch import nn

from nightcrawler.config import get_cfg, load_config, set_flat
from nightcrawler.models import build_model
from tests.conftest import REPO_ROOT, parity_dir


def _flops_tool():
    spec = importlib.util.spec_from_file_location("flops_tool", REPO_ROOT / "tools" / "flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference(name: str):
    path = parity_dir() / name
    if not path.is_file():
        pytest.skip(f"parity reference {path} is absent (set NIGHTCRAWLER_PARITY_DIR)")
    return json.loads(path.read_text()) if path.suffix == ".json" else torch.load(path, weights_only=True)


def _cfg(flat: dict):
    cfg = get_cfg()
    set_flat(cfg, flat)
    set_flat(cfg, {"NUM_GPUS": 0, "UNIFORMER.PRETRAIN_NAME": "None", "SF.PRETRAIN_NAME": "None"})
    return cfg


def test_full_size_uniformer_counts_match_the_original():
    # UniFormer-B exercises every counted operator (conv, BN, LN, linear, attention matmuls); SF's full-size
    # parameters are checked in test_slowfast.py and its count convention on the tiny model below.
    ref = _reference("manifests/manifest_uniformer_b32_k600.json")
    result = _flops_tool().model_complexity(_cfg(ref["cfg"]))
    assert result["view"] == [1, 3, 32, 224, 224]
    assert result["params"] == ref["num_parameters"]
    assert math.isclose(result["gflops"] * 1e9, ref["flops"]["flops_total"], rel_tol=1e-6)
    for op, flops in ref["flops"]["by_operator"].items():
        assert math.isclose(result["by_operator"][op] * 1e9, flops, rel_tol=1e-6), op


@pytest.mark.parametrize(
    ("experiment", "manifest", "params", "gflops"),
    [
        ("exp_adapt_bn/mvit_b32_k600/config.yaml", "manifest_mvit_b32_k600.json", 52_816_139, "236.31"),
        ("exp_adapt_bn/sf32_k700/config.yaml", "manifest_sf32_k700.json", 61_927_043, "118.43"),
    ],
)
def test_experiment_configs_match_the_manifests(experiment, manifest, params, gflops):
    # the experiment configs themselves, as tools/flops.py --cfg reads them (not the manifests' flat cfg)
    ref = _reference(f"manifests/{manifest}")
    assert ref["config_sources"]["config_yaml"] == experiment
    result = _flops_tool().model_complexity(load_config(str(REPO_ROOT / experiment), ["NUM_GPUS", 0]))
    assert result["view"] == [1, 3, 32, 224, 224]
    assert result["params"] == ref["num_parameters"] == params
    assert math.isclose(result["gflops"] * 1e9, ref["flops"]["flops_total"], rel_tol=1e-6)
    assert f"{result['gflops']:.2f}" == gflops  # the parity README's table, as tools/flops.py prints it
    assert result["by_operator"].keys() == ref["flops"]["by_operator"].keys()
    for op, flops in ref["flops"]["by_operator"].items():
        assert math.isclose(result["by_operator"][op] * 1e9, flops, rel_tol=1e-6), op
    for name, flops in ref["flops"]["by_top_module"].items():
        if name:
            assert math.isclose(result["by_top_module"][name] * 1e9, flops, rel_tol=1e-6, abs_tol=0.5), name


def _hook_count(model: nn.Module, x: torch.Tensor, skip_prefix: str) -> int:
    """Independent count with fvcore's conventions: one multiply-add per flop; eval BN = 2 per element."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv3d):
            total += output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.BatchNorm3d):
            total += 2 * output.numel()

    handles = [
        m.register_forward_hook(hook)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv3d, nn.Linear, nn.BatchNorm3d)) and not name.startswith(skip_prefix)
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


def test_tiny_sf_matches_an_independent_count():
    fixture = _reference("sf_tiny.pt")
    index = _reference("index.json")
    cfg = _cfg(fixture["cfg"])
    result = _flops_tool().model_complexity(cfg)
    expected_params = next(f["num_parameters"] for f in index["fixtures"] if f["file"] == "sf_tiny.pt")
    assert result["params"] == expected_params
    shape = tuple(result["view"])
    assert shape == (1, 3, cfg.DATA.NUM_FRAMES, cfg.DATA.TEST_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE)
    # fvcore's trace drops the fast res5 stage, whose output SF never uses
    expected = _hook_count(build_model(cfg), torch.zeros(shape), skip_prefix="fast.res_nl4")
    assert round(result["gflops"] * 1e9) == expected
    assert set(result["by_top_module"]) == {"slow", "fast", "dropout", "projection"}


def test_cli_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "flops.json"
    cfg_file = REPO_ROOT / "configs" / "models" / "uniformer_tiny.yaml"
    assert _flops_tool().main(["--cfg", str(cfg_file), "--json", str(out), "DATA.NUM_FRAMES", "4"]) == 0
    written = json.loads(out.read_text())
    assert written["model"] == "Uniformer" and written["view"] == [1, 3, 4, 64, 64]
    assert written["gflops"] > 0 and written["by_operator"]["matmul"] > 0  # attention is counted
    printed = capsys.readouterr().out
    assert "Uniformer" in printed and f"{written['gflops']:.2f}" in printed
