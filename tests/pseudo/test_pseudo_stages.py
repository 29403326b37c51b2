"""The four stage configs reproduce golden/pseudo row by row; config parsing and its errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nightcrawler.pseudo.config import CONFIG_DIR, load_stage_config, load_thresholds_file, load_yaml
from nightcrawler.pseudo.io import PseudoLabelError, read_pseudo_csv
from nightcrawler.pseudo.stage import resolve_pkl_paths, run_stage, write_decisions, write_stage_csv

STAGES = [
    ("stage1", 1, {}),
    ("stage2", 2, {}),
    ("stage3", 3, {}),
    ("stage4", 4, {}),
    ("stage3_default_wiring", 3, {"slowfast": "k600"}),
]


def _run(golden, golden_pkls, stage, same=None):
    cfg = load_stage_config(CONFIG_DIR / "pseudo" / f"stage{stage}.yaml")
    paths = resolve_pkl_paths(cfg, golden, golden_pkls, same_pkl_as=same)
    return cfg, run_stage(cfg, paths, golden / "pseudo" / "inputs" / "total_unlabel.csv")


@pytest.mark.parametrize("expected_name, stage, same", STAGES)
def test_stage_reproduces_golden(golden, golden_pkls, tmp_path, expected_name, stage, same):
    _, result = _run(golden, golden_pkls, stage, same)
    names, labels, probs = read_pseudo_csv(golden / "pseudo" / "expected" / f"{expected_name}.csv")
    kept = [n for n, k in zip(result.names, result.keep) if k]
    assert kept == names  # same rows, same order
    np.testing.assert_array_equal(result.labels[result.keep], labels)
    np.testing.assert_allclose(result.fusion.fused[result.keep], probs, rtol=0, atol=1e-6)
    # and through the writer: the file reads back to the same rows
    out = write_stage_csv(tmp_path / "out.csv", result)
    names2, labels2, probs2 = read_pseudo_csv(out)
    assert names2 == names and labels2.tolist() == labels.tolist()
    np.testing.assert_array_equal(probs2, result.fusion.fused[result.keep])


def test_stage_counts_match_summary(golden, golden_pkls):
    summary = json.loads((golden / "pseudo" / "summary.json").read_text())
    for stage in (1, 2, 3, 4):
        cfg, result = _run(golden, golden_pkls, stage)
        expected = summary["stages"][f"stage{stage}"]
        assert int(result.keep.sum()) == expected["kept"]
        assert int((result.keep & (result.fusion.branch == 0)).sum()) == expected["kept_from_6_7_branch"]
        for c, row in expected["per_class"].items():
            mask = result.labels == int(c)
            assert int((mask & result.keep).sum()) == row["kept"]
            assert int((mask & ~result.keep).sum()) == row["rejected"]
            if row["threshold"] is not None:
                assert cfg.selection.thresholds[int(c)] == row["threshold"]
    assert int((result.fusion.branch == 0).sum()) == summary["rows_in_6_7_branch"]


def test_decisions_match_golden(golden, golden_pkls, tmp_path):
    with open(golden / "pseudo" / "expected" / "decisions.csv", newline="") as f:
        expected = list(csv.DictReader(f))
    kept = {}
    for stage in (1, 2, 3, 4):
        cfg, result = _run(golden, golden_pkls, stage)
        kept[stage] = result.keep
    path = write_decisions(tmp_path / "d.csv", result, cfg.fusion)  # stage 4's
    with open(path, newline="") as f:
        ours = list(csv.DictReader(f))
    assert len(ours) == len(expected) == 300
    for i, (e, o) in enumerate(zip(expected, ours)):
        assert o["id"] == e["id"] and int(o["row"]) == int(e["row"]) == i
        assert int(o["ssv2_argmax"]) == int(e["ssv2_argmax"])
        assert (int(o["rule"]) == 0) == bool(int(e["branch_6_7"]))
        assert int(o["label"]) == int(e["fused_argmax"])
        assert abs(float(o["confidence"]) - float(e["fused_max"])) < 1e-6
        for stage in (1, 2, 3, 4):
            assert bool(kept[stage][i]) == bool(int(e[f"kept_stage{stage}"]))


def test_stage_configs_hold_the_original_numbers():
    cfg1 = load_stage_config(CONFIG_DIR / "pseudo" / "stage1.yaml")
    assert cfg1.fusion.weights == {"ssv2": 0.375, "k600": 0.375, "mvit": 0.1, "slowfast": 0.1}
    assert cfg1.fusion.rules[0].classes == (6, 7) and cfg1.fusion.rules[0].weights == {
        "ssv2": 0.8,
        "k600": 0.2,
    }
    assert cfg1.models["ssv2"].dir == "exp_adapt_bn/uniformer_b32_ssv2"
    assert cfg1.pkl_name == "total_unlabelx32x224x1x1.pkl" and cfg1.output == "data/pseudo/stage1.csv"
    cfg3 = load_stage_config(CONFIG_DIR / "pseudo" / "stage3.yaml")
    assert cfg3.selection.thresholds[5] == 0.45 and cfg3.selection.thresholds[10] == 0.306
    assert cfg3.models["slowfast"].dir == "exp_pseudo_stage2/sf32_k700" and cfg3.same_pkl_as == {}
    assert cfg3.fusion == cfg1.fusion
    assert load_stage_config(CONFIG_DIR / "pseudo" / "stage4.yaml").selection.method == "all"


def test_resolve_paths(tmp_path):
    cfg = load_stage_config(CONFIG_DIR / "pseudo" / "stage2.yaml")
    paths = resolve_pkl_paths(
        cfg, tmp_path, {"mvit": "x.pkl"}, pkl_name="y.pkl", same_pkl_as={"slowfast": "k600"}
    )
    assert paths["ssv2"] == tmp_path / "exp_pseudo_stage1/uniformer_b32_ssv2/y.pkl"
    assert paths["mvit"].name == "x.pkl"
    assert paths["slowfast"] == paths["k600"] == tmp_path / "exp_pseudo_stage1/uniformer_b32_k600/y.pkl"
    with pytest.raises(PseudoLabelError, match=r"no model role\(s\) \['resnet'\]"):
        resolve_pkl_paths(cfg, tmp_path, {"resnet": "x.pkl"})
    paths = resolve_pkl_paths(cfg, tmp_path, model_dirs={"mvit": "elsewhere/mvit_tiny"})
    assert paths["mvit"] == tmp_path / "elsewhere/mvit_tiny/total_unlabelx32x224x1x1.pkl"
    with pytest.raises(PseudoLabelError, match=r"no model role\(s\) \['tiny'\]"):
        resolve_pkl_paths(cfg, tmp_path, model_dirs={"tiny": "x"})
    two = load_stage_config(CONFIG_DIR / "pseudo" / "two_models.yaml")
    assert two.fusion.models == ("uniformer", "slowfast") and two.selection.method == "mean_minus_k_std"


def test_missing_pkl_is_named(golden, golden_pkls, tmp_path):
    cfg = load_stage_config(CONFIG_DIR / "pseudo" / "stage1.yaml")
    paths = resolve_pkl_paths(cfg, tmp_path, {k: v for k, v in golden_pkls.items() if k != "mvit"})
    with pytest.raises(PseudoLabelError, match="PKL not found: .*exp_adapt_bn/mvit_b32_k600/total_unlabel"):
        run_stage(cfg, paths, golden / "pseudo" / "inputs" / "total_unlabel.csv")


def _write_yaml(path, text):
    path.write_text(text)
    return path


BASE = """
num_classes: 3
inputs:
  pkl_name: p.pkl
  models: {a: A, b: B}
output: out.csv
fusion:
  weights: {a: 0.5, b: 0.5}
selection: {method: thresholds, thresholds: [0.1, 0.2, 0.3]}
"""


@pytest.mark.parametrize(
    "patch, message",
    [
        ("fusion:\n  weights: {a: 0.5, c: 0.5}\n", r"'fusion' uses model\(s\) \['c'\] not listed"),
        (
            "selection: {method: thresholds, thresholds: [0.1]}\n",
            "'selection.thresholds' must list 3 numbers",
        ),
        ("selection: {method: best}\n", "selection method must be one of"),
        (
            "fusion:\n  rules: [{when: {model: a, argmax_in: [5]}, weights: {a: 1}}]\n",
            "argmax_in' must list class",
        ),
        ("fusion:\n  weights: {a: high}\n", "weight of 'a' must be a number"),
        ("inputs: {same_pkl_as: {a: z}}\n", "maps 'a' -> 'z'"),
        ("output: null\n", "'output' is required"),
    ],
)
def test_stage_config_errors(tmp_path, patch, message):
    _write_yaml(tmp_path / "base.yaml", BASE)
    path = _write_yaml(tmp_path / "bad.yaml", "_base_: base.yaml\n" + patch)
    with pytest.raises(PseudoLabelError, match=message) as info:
        load_stage_config(path)
    assert "bad.yaml" in str(info.value)


def test_yaml_base_merge_and_cycle(tmp_path):
    _write_yaml(tmp_path / "base.yaml", BASE)
    path = _write_yaml(tmp_path / "child.yaml", "_base_: base.yaml\ninputs: {models: {b: BB}}\n")
    data = load_yaml(path)
    assert data["inputs"] == {"pkl_name": "p.pkl", "models": {"a": "A", "b": "BB"}}
    _write_yaml(tmp_path / "x.yaml", "_base_: y.yaml\n")
    _write_yaml(tmp_path / "y.yaml", "_base_: x.yaml\n")
    with pytest.raises(PseudoLabelError, match="cycle"):
        load_yaml(tmp_path / "x.yaml")
    with pytest.raises(PseudoLabelError, match="config file not found"):
        load_yaml(tmp_path / "none.yaml")


def test_thresholds_file(tmp_path):
    path = _write_yaml(tmp_path / "t.yaml", "selection: {method: thresholds, thresholds: [0.5, 0.5, 0.25]}\n")
    assert load_thresholds_file(path, 3).thresholds == (0.5, 0.5, 0.25)
    path = _write_yaml(tmp_path / "u.yaml", "thresholds: [0.1, 0.2]\n")
    with pytest.raises(PseudoLabelError, match="u.yaml"):
        load_thresholds_file(path, 3)
