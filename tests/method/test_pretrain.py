"""Source pre-training: zoo-format export, loading through the users' keys, the cache key, the plan files."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nightcrawler.config import load_config
from nightcrawler.method.plan import load_plan
from nightcrawler.method.pretrain import cache_key, pretrained_overrides, zoo_state
from nightcrawler.models import build_model
from nightcrawler.models.checkpoint import load_checkpoint_weights, load_weights_from_cfg
from tests.conftest import REPO_ROOT

RECIPE = REPO_ROOT / "configs" / "benchmark"


def _cfg(model: str, num_classes: int, **opts):
    cfg = load_config(str(RECIPE / f"{model}.yaml"))
    cfg.defrost()
    cfg.MODEL.NUM_CLASSES = num_classes
    for key, value in opts.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


@pytest.mark.parametrize("model", ["uniformer_tiny", "sf_tiny", "mvit_tiny"])
def test_zoo_file_loads_through_the_familys_key_and_drops_the_corpus_head(model, tmp_path):
    torch.manual_seed(0)
    source = build_model(_cfg(model, 23))
    name = source.__class__.__name__
    model_name = _cfg(model, 23).MODEL.MODEL_NAME
    path = tmp_path / "zoo.pth"
    torch.save(zoo_state(model_name, source.state_dict()), path)
    opts = pretrained_overrides(model_name, path)
    key = next(iter(opts))
    target_cfg = _cfg(model, 11)
    if key == "TRAIN.CHECKPOINT_FILE_PATH":
        target = build_model(target_cfg)
        load_checkpoint_weights(target, path, target_cfg)
        assert opts["TRAIN.CHECKPOINT_EPOCH_RESET"] is True
    else:
        section, field = key.split(".")
        setattr(getattr(target_cfg, section), field, str(path))
        target = build_model(target_cfg)
        load_weights_from_cfg(target, target_cfg)
    src, dst = source.state_dict(), target.state_dict()
    differ = [k for k in dst if dst[k].shape != src[k].shape]
    assert differ and all(src[k].shape[0] == 23 and dst[k].shape[0] == 11 for k in differ), name
    same = [k for k in dst if k not in differ]
    assert len(same) > 20 and all(torch.equal(src[k], dst[k]) for k in same)


def test_zoo_state_layouts():
    sd = {"a.weight": torch.zeros(1)}
    assert zoo_state("Uniformer", sd) == {"model": sd}
    assert list(zoo_state("SF", sd)["model"]) == ["module.backbone.a.weight"]
    assert zoo_state("MViT", sd) == {"model_state": sd}
    with pytest.raises(ValueError, match="no zoo format"):
        zoo_state("X3D", sd)


def test_cache_key_follows_the_settings():
    plan = load_plan(RECIPE / "plan.yaml")
    key = cache_key(plan, "sf_tiny")
    assert key == cache_key(load_plan(RECIPE / "plan.yaml"), "sf_tiny")
    assert key != cache_key(plan, "uniformer_tiny")
    assert key != cache_key(replace(plan, pretrain=replace(plan.pretrain, per_class=5)), "sf_tiny")
    assert key != cache_key(replace(plan, data=replace(plan.data, width=64)), "sf_tiny")
    # the target's class count and seed do not change the source weights
    assert key == cache_key(replace(plan, data=replace(plan.data, num_classes=5)), "sf_tiny")


def test_plans_load_and_refuse_unknown_keys(tmp_path):
    for path in [
        RECIPE / "plan.yaml",
        REPO_ROOT / "configs" / "demo" / "plan.yaml",
        REPO_ROOT / "configs" / "demo" / "quick.yaml",
    ]:
        plan = load_plan(path)
        assert plan.recipe == RECIPE and plan.models == ("uniformer_tiny", "sf_tiny")
    bench = load_plan(RECIPE / "plan.yaml")
    assert bench.data.num_classes == 11 and bench.data.per_class["test"] * 11 >= 300
    bad = tmp_path / "plan.yaml"
    bad.write_text(f"recipe: {RECIPE}\nstagse: 2\n")
    with pytest.raises(ValueError, match="unknown plan keys.*stagse"):
        load_plan(bad)
    bad.write_text(f"recipe: {RECIPE}\ndata: {{per_class: {{tset: 3}}}}\n")
    with pytest.raises(ValueError, match="unknown sources.*tset"):
        load_plan(bad)
    bad.write_text(f"recipe: {RECIPE}\nmodels: [x3d_tiny]\n")
    with pytest.raises(ValueError, match="x3d_tiny"):
        load_plan(bad)
