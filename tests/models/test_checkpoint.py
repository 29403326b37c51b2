"""Checkpoint loading: every supported layout, strictness, wrong-model errors, conversion tool."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
import yaml

from nightcrawler.config import get_cfg, load_config, set_flat
from nightcrawler.models import build_model
from nightcrawler.models.checkpoint import (
    CheckpointError,
    guess_architecture,
    load_checkpoint_weights,
    load_pretrained,
    load_weights_from_cfg,
)
from nightcrawler.utils.errors import EXIT_CHECKPOINT
from tests.conftest import REPO_ROOT, load_tool, parity_dir

CONFIGS = REPO_ROOT / "configs" / "models"


def _tiny(name: str, *opts, seed: int = 0):
    cfg = load_config(str(CONFIGS / f"{name}_tiny.yaml"), ["NUM_GPUS", 0, *opts])
    torch.manual_seed(seed)
    return build_model(cfg), cfg


def _assert_loaded(model, sd, skip=()):
    ours = model.state_dict()
    for k, v in sd.items():
        if k not in skip:
            assert torch.equal(ours[k], v), k


@pytest.fixture(scope="module")
def sf():
    model, _ = _tiny("sf", seed=1)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def uniformer():
    model, _ = _tiny("uniformer", seed=2)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def mvit():
    model, _ = _tiny("mvit", seed=3)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _with_head(sd, key, classes):
    out = dict(sd)
    out[f"{key}.weight"] = torch.randn(classes, sd[f"{key}.weight"].shape[1])
    out[f"{key}.bias"] = torch.randn(classes)
    return out


def test_own_pyth_round_trip(tmp_path, sf):
    cfg = get_cfg()
    set_flat(cfg, {"MODEL.MODEL_NAME": "SF"})
    path = tmp_path / "checkpoint_epoch_00003.pyth"
    optimizer_state = {
        "state": {0: {"exp_avg": torch.zeros(3)}},
        "param_groups": [{"lr": 0.1, "params": [0]}],
    }
    torch.save(
        {"epoch": 2, "model_state": sf, "optimizer_state": optimizer_state, "scaler": {}, "cfg": cfg.dump()},
        path,
    )
    model, _ = _tiny("sf", seed=9)
    report = load_pretrained(model, path, num_classes=11)
    assert report.source_format == "pyth" and report.clean and not report.dropped
    assert sorted(report.loaded) == sorted(sf)
    _assert_loaded(model, sf)


@pytest.mark.parametrize("container", [None, "model", "state_dict"])
@pytest.mark.parametrize("classes", [400, 11])
def test_uniformer_video_zoo(tmp_path, uniformer, container, classes):
    sd = _with_head(uniformer, "head", classes)
    torch.save(sd if container is None else {container: sd, "epoch": 10}, tmp_path / "zoo.pth")
    model, _ = _tiny("uniformer", seed=9)
    before = model.head.weight.detach().clone()
    report = load_pretrained(model, tmp_path / "zoo.pth", num_classes=11)
    assert report.checkpoint_arch == "Uniformer"
    if classes == 11:
        assert not report.dropped
        _assert_loaded(model, sd)
    else:
        assert report.dropped == ["head.bias", "head.weight"]
        _assert_loaded(model, sd, skip=report.dropped)
        assert torch.equal(model.head.weight, before)  # left at its initialisation


def test_pyslowfast_mvit_zoo(tmp_path, mvit, caplog):
    sd = _with_head(mvit, "head.projection", 600)
    cfg_text = yaml.safe_dump({"MODEL": {"MODEL_NAME": "MViT", "NUM_CLASSES": 600}})
    torch.save(
        {"model_state": sd, "epoch": 199, "optimizer_state": {}, "cfg": cfg_text}, tmp_path / "k600.pyth"
    )
    model, cfg = _tiny("mvit", seed=9)
    with caplog.at_level(logging.INFO, logger="nightcrawler.models.checkpoint"):
        report = load_checkpoint_weights(model, tmp_path / "k600.pyth", cfg)
    assert report.dropped == ["head.projection.bias", "head.projection.weight"]
    assert "class counts differ" in caplog.text
    _assert_loaded(model, sd, skip=report.dropped)


def test_alphaction_slowfast(tmp_path, sf):
    backbone = {k: v for k, v in sf.items() if not k.startswith("projection.")}
    weights = {f"module.backbone.{k}": v for k, v in backbone.items()}
    weights["module.cls_head.pred.weight"] = torch.randn(700, 256)
    weights["module.cls_head.pred.bias"] = torch.randn(700)
    torch.save({"model": weights}, tmp_path / "SlowFast-ResNet101-8x8.pth")
    model, _ = _tiny("sf", seed=9)
    report = load_pretrained(model, tmp_path / "SlowFast-ResNet101-8x8.pth", num_classes=11)
    assert report.source_format == "alphaction" and report.checkpoint_arch == "SF"
    assert report.dropped == ["cls_head.pred.weight", "cls_head.pred.bias"]
    assert report.clean  # the model's own classifier is simply not in the file
    _assert_loaded(model, backbone)


def _inflation_fixture():
    path = parity_dir() / "uniformer_tiny_inflation.pt"
    if not path.is_file():
        pytest.skip(f"parity reference {path} is absent (set NIGHTCRAWLER_PARITY_DIR)")
    return torch.load(path, weights_only=True)


def test_uniformer_2d_imagenet_inflation(tmp_path):
    fx = _inflation_fixture()
    cfg = get_cfg()
    set_flat(cfg, fx["cfg"])
    set_flat(cfg, {"NUM_GPUS": 0, "UNIFORMER.PRETRAIN_NAME": "None"})
    model = build_model(cfg)
    torch.save({"model": fx["state_dict_2d"]}, tmp_path / "uniformer_base_in1k.pth")
    report = load_pretrained(model, tmp_path / "uniformer_base_in1k.pth", num_classes=cfg.MODEL.NUM_CLASSES)
    assert sorted(report.inflated) == sorted(fx["inflated_keys"])
    assert sorted(report.dropped) == sorted(fx["dropped_keys"])
    assert sorted(set(model.state_dict()) - set(report.loaded)) == sorted(fx["missing_keys_after_load"])
    assert not fx["unexpected_keys_after_load"] and not report.unexpected
    ours = model.state_dict()
    for k, v in fx["state_dict_3d"].items():
        assert torch.equal(ours[k], v), k


def test_uniformer_pretrain_name_hook_inflates_a_flat_2d_file(tmp_path):
    """The config route the experiments take: load_weights_from_cfg reads UNIFORMER.PRETRAIN_NAME from
    MODEL.PRETRAIN_DIR (the engine's explicit step after build_model)."""
    fx = _inflation_fixture()
    torch.save(fx["state_dict_2d"], tmp_path / "uniformer_tiny_in1k.pth")  # flat, as the original hook reads
    cfg = get_cfg()
    set_flat(cfg, fx["cfg"])
    set_flat(cfg, {"NUM_GPUS": 0, "UNIFORMER.PRETRAIN_NAME": "None"})
    torch.manual_seed(5)
    fresh_head = {k: v for k, v in build_model(cfg).state_dict().items() if k.startswith("head.")}
    set_flat(cfg, {"UNIFORMER.PRETRAIN_NAME": "uniformer_tiny_in1k", "MODEL.PRETRAIN_DIR": str(tmp_path)})
    torch.manual_seed(5)
    model = build_model(cfg)
    load_weights_from_cfg(model, cfg)
    ours = model.state_dict()
    assert set(ours) - set(fx["state_dict_3d"]) == set(fx["missing_keys_after_load"]) == set(fresh_head)
    for k, v in fx["state_dict_3d"].items():
        assert torch.equal(ours[k], v), k
    # the 1000-class ImageNet head is dropped: the 11-class one keeps its initialisation
    for k, v in fresh_head.items():
        assert torch.equal(ours[k], v), k
    assert ours["patch_embed1.proj.weight"].shape == (16, 3, 3, 4, 4)
    set_flat(cfg, {"UNIFORMER.PRETRAIN_NAME": "absent_in1k"})
    with pytest.raises(FileNotFoundError, match="absent_in1k"):
        load_weights_from_cfg(build_model(cfg), cfg)


def test_wrong_model_is_named(tmp_path, sf, mvit):
    torch.save({"model_state": sf, "epoch": 1}, tmp_path / "sf.pyth")
    model, _ = _tiny("uniformer")
    with pytest.raises(CheckpointError, match="seems to hold weights for SF, but the model .* is Uniformer"):
        load_pretrained(model, tmp_path / "sf.pyth", strict=False)
    torch.save({"model": {f"module.backbone.{k}": v for k, v in sf.items()}}, tmp_path / "alpha.pth")
    model, _ = _tiny("mvit")
    with pytest.raises(CheckpointError, match="for SF, but the model .* is MViT"):
        load_pretrained(model, tmp_path / "alpha.pth")
    cfg_text = yaml.safe_dump({"MODEL": {"MODEL_NAME": "MViT"}})
    torch.save({"model_state": {"foo.weight": torch.zeros(1)}, "cfg": cfg_text}, tmp_path / "m.pyth")
    with pytest.raises(CheckpointError, match="for MViT, but the model .* is SF"):
        load_pretrained(_tiny("sf")[0], tmp_path / "m.pyth")


def test_strict_mismatch_lists_every_problem_and_non_strict_loads_the_rest(tmp_path, sf, caplog):
    bad = dict(sf)
    del bad["slow.conv1.weight"]
    bad["slow.extra.weight"] = torch.zeros(2)
    bad["fast.Tconv1.conv.bias"] = torch.zeros(5)
    torch.save(bad, tmp_path / "bad.pth")
    model, _ = _tiny("sf", seed=9)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(model, tmp_path / "bad.pth")
    message = str(info.value)
    assert "missing from the checkpoint (1): slow.conv1.weight" in message
    assert "not in the model (1): slow.extra.weight" in message
    assert "fast.Tconv1.conv.bias checkpoint (5,) vs model (2,)" in message
    fresh_conv = model.slow.conv1.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="nightcrawler.models.checkpoint"):
        report = load_pretrained(model, tmp_path / "bad.pth", strict=False)
    assert "partial load" in caplog.text
    assert len(report.loaded) == len(sf) - 2
    assert torch.equal(model.slow.conv1.weight, fresh_conv)
    _assert_loaded(model, sf, skip={"slow.conv1.weight", "fast.Tconv1.conv.bias"})


def test_nothing_matching_is_an_error_even_when_lenient(tmp_path):
    torch.save({"encoder.layer.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no tensor of the checkpoint matches"):
        load_pretrained(_tiny("sf")[0], tmp_path / "other.pth", strict=False)


def test_unreadable_and_pickled_files(tmp_path, sf):
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(_tiny("sf")[0], tmp_path / "absent.pyth")
    (tmp_path / "junk.pyth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pyth: not a readable PyTorch checkpoint"):
        load_pretrained(_tiny("sf")[0], tmp_path / "junk.pyth")
    torch.save({"model_state": sf, "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pyth")
    model, _ = _tiny("sf", seed=9)
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        load_pretrained(model, tmp_path / "pickled.pyth")
    load_pretrained(model, tmp_path / "pickled.pyth", allow_pickle=True)
    _assert_loaded(model, sf)
    torch.save({"weights": [1, 2]}, tmp_path / "layout.pyth")
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout .*weights"):
        load_pretrained(model, tmp_path / "layout.pyth")
    with pytest.raises(ValueError, match="num_classes is 7"):
        load_pretrained(model, tmp_path / "pickled.pyth", num_classes=7, allow_pickle=True)


def test_clear_name_pattern_and_generic_inflation(tmp_path, sf):
    renamed = {f"encoder.{k}": v for k, v in sf.items()}
    kernel_3d = sf["fast.conv1.weight"]  # (C, 3, 5, 7, 7)
    renamed["encoder.fast.conv1.weight"] = kernel_3d[:, :, 2].clone()  # a 2-D kernel
    torch.save({"model_state": renamed}, tmp_path / "renamed.pyth")
    model, cfg = _tiny("sf", "TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN", "('encoder.',)", seed=9)
    with pytest.raises(CheckpointError, match=r"fast.conv1.weight checkpoint \(1, 3, 7, 7\)"):
        load_checkpoint_weights(model, tmp_path / "renamed.pyth", cfg)
    set_flat(cfg, {"TRAIN.CHECKPOINT_INFLATE": True})
    report = load_checkpoint_weights(model, tmp_path / "renamed.pyth", cfg)
    assert report.inflated == ["fast.conv1.weight"] and report.renamed == len(sf)
    expected = kernel_3d[:, :, 2:3].repeat(1, 1, 5, 1, 1) / 5
    assert torch.equal(model.fast.conv1.weight, expected)
    _assert_loaded(model, sf, skip={"fast.conv1.weight"})


def test_frozen_bn_model_loads_trainable_checkpoint(tmp_path, sf):
    torch.save({"model_state": sf}, tmp_path / "sf.pyth")
    model, _ = _tiny("sf", "SF.FROZEN_BN", True)
    report = load_pretrained(model, tmp_path / "sf.pyth")
    assert report.clean
    _assert_loaded(model, {k: v for k, v in sf.items() if not k.endswith("num_batches_tracked")})


def test_load_weights_from_cfg_resolves_names(tmp_path, monkeypatch, sf):
    torch.save({"model_state": sf}, tmp_path / "sf_weights.pyth")
    model, cfg = _tiny("sf", seed=9)
    assert load_weights_from_cfg(model, cfg) is None  # PRETRAIN_NAME "None"
    set_flat(cfg, {"SF.PRETRAIN_NAME": "sf_weights"})
    monkeypatch.setenv("NIGHTCRAWLER_PRETRAIN_DIR", str(tmp_path))
    report = load_weights_from_cfg(model, cfg)
    assert report.path == str(tmp_path / "sf_weights.pyth")
    _assert_loaded(model, sf)
    set_flat(
        cfg, {"SF.PRETRAIN_NAME": str(tmp_path / "sf_weights.pyth"), "MODEL.PRETRAIN_DIR": "/nonexistent"}
    )
    assert load_weights_from_cfg(model, cfg).path == str(tmp_path / "sf_weights.pyth")
    set_flat(cfg, {"SF.PRETRAIN_NAME": "absent_weights", "MODEL.PRETRAIN_DIR": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match=r"absent_weights.*absent_weights\.pth.*MODEL.PRETRAIN_DIR"):
        load_weights_from_cfg(model, cfg)
    mvit_model, mvit_cfg = _tiny("mvit")
    assert load_weights_from_cfg(mvit_model, mvit_cfg) is None  # MViT uses TRAIN.CHECKPOINT_FILE_PATH


def test_pretrain_strict_opt_out(tmp_path, sf):
    partial = {k: v for k, v in sf.items() if not k.startswith("fast.Tconv")}
    torch.save(partial, tmp_path / "partial.pth")
    model, cfg = _tiny("sf", "SF.PRETRAIN_NAME", str(tmp_path / "partial.pth"), seed=9)
    with pytest.raises(CheckpointError, match="MODEL.PRETRAIN_STRICT"):
        load_weights_from_cfg(model, cfg)
    set_flat(cfg, {"MODEL.PRETRAIN_STRICT": False})
    report = load_weights_from_cfg(model, cfg)
    assert sorted(report.missing) == sorted(k for k in sf if k.startswith("fast.Tconv"))


def test_guess_architecture():
    assert guess_architecture(["s1.pathway0_stem.conv.weight"]).startswith("PySlowFast SlowFast")
    assert guess_architecture(["a.weight"]) is None


def _convert_tool():
    return load_tool("convert_checkpoint")


def test_convert_tool_writes_clean_pyth(tmp_path, sf):
    weights = {f"module.backbone.{k}": v for k, v in sf.items() if not k.startswith("projection.")}
    torch.save({"model": weights}, tmp_path / "alpha.pth")
    out = tmp_path / "out" / "sf_converted.pyth"
    rc = _convert_tool().main(
        ["--cfg", str(CONFIGS / "sf_tiny.yaml"), "--input", str(tmp_path / "alpha.pth"), "--output", str(out)]
    )
    assert rc == 0
    written = torch.load(out, weights_only=True)
    assert set(written) == {"model_state", "epoch", "cfg"} and written["epoch"] == -1
    assert yaml.safe_load(written["cfg"])["MODEL"]["MODEL_NAME"] == "SF"
    model, _ = _tiny("sf", seed=9)
    model.load_state_dict(written["model_state"], strict=True)
    _assert_loaded(model, {k.removeprefix("module.backbone."): v for k, v in weights.items()})
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    bad = tmp_path / "bad.pyth"
    rc = _convert_tool().main(
        ["--cfg", str(CONFIGS / "uniformer_tiny.yaml"), "--input", str(out), "--output", str(bad)]
    )
    # SF weights for a UniFormer config: refused, nothing written
    assert rc == EXIT_CHECKPOINT and not bad.exists()


def _convert(cfg_name: str, src, dst, *extra) -> int:
    args = ["--cfg", str(CONFIGS / f"{cfg_name}_tiny.yaml"), "--input", str(src), "--output", str(dst)]
    return _convert_tool().main([*args, *extra])


def _fresh_state(name: str) -> dict[str, torch.Tensor]:
    """The state dict the tool starts from: the model built under torch.manual_seed(RNG_SEED)."""
    cfg = load_config(str(CONFIGS / f"{name}_tiny.yaml"), ["NUM_GPUS", 0])
    torch.manual_seed(cfg.RNG_SEED)
    return build_model(cfg).state_dict()


def test_convert_tool_inflates_a_2d_uniformer_file(tmp_path, capsys):
    fx = _inflation_fixture()
    torch.save(fx["state_dict_2d"], tmp_path / "uniformer_in1k.pth")
    out = tmp_path / "uniformer_video.pyth"
    assert _convert("uniformer", tmp_path / "uniformer_in1k.pth", out) == 0
    written = torch.load(out, weights_only=True)["model_state"]
    fresh = _fresh_state("uniformer")
    assert written.keys() == fresh.keys()
    for k, v in fx["state_dict_3d"].items():
        assert torch.equal(written[k], v), k
    for k in fx["missing_keys_after_load"]:
        assert torch.equal(written[k], fresh[k]), k
    assert "33 2-D kernels inflated to 3-D; dropped: head.weight, head.bias" in capsys.readouterr().out


def test_convert_tool_drops_a_600_class_pyslowfast_head(tmp_path, mvit, caplog):
    sd = _with_head(mvit, "head.projection", 600)
    cfg_text = yaml.safe_dump({"MODEL": {"MODEL_NAME": "MViT", "NUM_CLASSES": 600}})
    optimizer_state = {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    torch.save(
        {"model_state": sd, "epoch": 199, "optimizer_state": optimizer_state, "cfg": cfg_text},
        tmp_path / "MVIT_B_32x3_CONV_K600.pyth",
    )
    out = tmp_path / "mvit.pyth"
    with caplog.at_level(logging.INFO):
        assert _convert("mvit", tmp_path / "MVIT_B_32x3_CONV_K600.pyth", out) == 0
    written = torch.load(out, weights_only=True)
    assert set(written) == {"model_state", "epoch", "cfg"} and written["epoch"] == -1
    state, fresh = written["model_state"], _fresh_state("mvit")
    assert state.keys() == fresh.keys()
    assert state["head.projection.weight"].shape == (11, sd["head.projection.weight"].shape[1])
    for k in ("head.projection.weight", "head.projection.bias"):
        assert torch.equal(state[k], fresh[k]), k  # the 11-class head: the seeded initialisation
    for k, v in sd.items():
        if not k.startswith("head.projection."):
            assert torch.equal(state[k], v), k
    assert "head.projection.weight has shape (600, 128), the model (11, 128)" in caplog.text
    assert "initialised fresh (not in" in caplog.text
    assert caplog.text.count("head.projection.weight, head.projection.bias") == 1


def test_convert_tool_non_strict_loads_the_matching_part(tmp_path, sf, caplog):
    partial = {k: v for k, v in sf.items() if not k.startswith("fast.Tconv")}
    partial["slow.extra.weight"] = torch.zeros(2)
    torch.save({"model_state": partial}, tmp_path / "partial.pyth")
    out = tmp_path / "sf.pyth"
    assert _convert("sf", tmp_path / "partial.pyth", out) == EXIT_CHECKPOINT and not out.exists()
    with caplog.at_level(logging.INFO):
        assert _convert("sf", tmp_path / "partial.pyth", out, "--non-strict") == 0
    assert "partial load" in caplog.text and "not in the model (1): slow.extra.weight" in caplog.text
    state, fresh = torch.load(out, weights_only=True)["model_state"], _fresh_state("sf")
    missing = [k for k in sf if k.startswith("fast.Tconv")]
    assert missing and state.keys() == fresh.keys()
    for k in sf:
        assert torch.equal(state[k], fresh[k] if k in missing else sf[k]), k


def test_convert_tool_alphaction_file_without_bn_counters_is_strict(tmp_path, sf):
    """Real AlphAction files have no num_batches_tracked: a strict conversion accepts them (counters at 0)."""
    weights = {
        f"module.backbone.{k}": v
        for k, v in sf.items()
        if not k.startswith("projection.") and not k.endswith("num_batches_tracked")
    }
    assert len(weights) < len(sf) - 2
    weights["module.cls_head.pred.weight"] = torch.randn(700, sf["projection.weight"].shape[1])
    weights["module.cls_head.pred.bias"] = torch.randn(700)
    torch.save({"model": weights}, tmp_path / "SlowFast-ResNet101-8x8.pth")
    out = tmp_path / "sf.pyth"
    assert _convert("sf", tmp_path / "SlowFast-ResNet101-8x8.pth", out) == 0
    state, fresh = torch.load(out, weights_only=True)["model_state"], _fresh_state("sf")
    assert state.keys() == fresh.keys()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert counters and all(state[k].item() == 0 for k in counters)
    for k in ("projection.weight", "projection.bias"):
        assert torch.equal(state[k], fresh[k]), k
    for k, v in weights.items():
        if not k.startswith("module.cls_head."):
            assert torch.equal(state[k.removeprefix("module.backbone.")], v), k
