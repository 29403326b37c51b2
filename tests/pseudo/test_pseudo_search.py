"""Threshold search: the original's printouts on golden/threshold_search, and hand-made sweeps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nightcrawler.pseudo.config import CONFIG_DIR, load_search_config, load_stage_config, load_thresholds_file
from nightcrawler.pseudo.fuse import fuse_predictions
from nightcrawler.pseudo.io import PseudoLabelError, read_labelled_list
from nightcrawler.pseudo.search import (
    choose_thresholds,
    match_ground_truth,
    original_printout,
    sweep,
    table_csv,
    thresholds_yaml,
)
from nightcrawler.pseudo.stage import load_aligned

from .conftest import MODELS


@pytest.fixture(scope="module")
def arid(golden):
    root = golden / "threshold_search"
    cfg = load_stage_config(CONFIG_DIR / "pseudo" / "stage1.yaml")
    paths = {role: root / "inputs" / folder / "aridx32x224x1x1.pkl" for role, folder in MODELS.items()}
    aligned = load_aligned(paths, 11, root / "inputs" / "arid_unlabel.csv", skip_rows=3088)
    fused = fuse_predictions(aligned.preds, cfg.fusion)
    truth_map = read_labelled_list(root / "inputs" / "data" / "real_arid_unlabel.csv")
    truth = np.array([truth_map[n] for n in aligned.names])
    whole_file = np.bincount(list(truth_map.values()), minlength=11)
    table = sweep(fused.labels, fused.confidence, truth, np.linspace(0, 1, 1001), 11)
    return root, fused, truth, whole_file, table


@pytest.mark.parametrize("cls", [10, 7])
def test_original_printout_exact(arid, cls):
    root, _, _, whole_file, table = arid
    lines, error = original_printout(table, cls, int(whole_file[cls]))
    assert "\n".join(lines) + "\n" == (root / "expected" / f"stdout_class{cls}.txt").read_text()
    summary = json.loads((root / "summary.json").read_text())["runs"][f"class{cls}"]
    assert f"grid index {summary['crashed_at_grid_index']} " in error
    assert int(table.selected[cls, 0]) == summary["rows_with_fused_argmax_equal_class"]


def test_original_criterion_picks_last_printed(arid):
    _, _, _, _, table = arid
    choices = choose_thresholds(table, "original")
    assert choices[10].threshold == pytest.approx(0.428) and choices[10].index == 428
    assert choices[7].index == 982


def test_skip_rows_needs_matching_list(golden, tmp_path):
    root = golden / "threshold_search"
    paths = {role: root / "inputs" / folder / "aridx32x224x1x1.pkl" for role, folder in MODELS.items()}
    with pytest.raises(PseudoLabelError, match="has 3387 rows but list CSV .* lists 300"):
        load_aligned(paths, 11, root / "inputs" / "arid_unlabel.csv", skip_rows=1)


def test_hand_made_sweep():
    pred = np.array([0, 0, 0, 1, 1, 0])
    conf = np.array([0.9, 0.6, 0.3, 0.8, 0.4, 0.5])
    truth = np.array([0, 1, 0, 1, 1, 0])
    grid = np.array([0.0, 0.5, 0.7, 0.95])
    t = sweep(pred, conf, truth, grid, 2)
    assert t.positives.tolist() == [3, 3]
    assert t.selected.tolist() == [[4, 3, 1, 0], [2, 1, 1, 0]]
    assert t.correct.tolist() == [[3, 2, 1, 0], [2, 1, 1, 0]]
    np.testing.assert_allclose(t.precision[0, :3], [0.75, 2 / 3, 1.0])
    np.testing.assert_allclose(t.coverage[0, :3], [4 / 3, 1.0, 1 / 3])
    np.testing.assert_allclose(t.recall[1, :3], [2 / 3, 1 / 3, 1 / 3])
    # F1 with P = 0.75, R = 1.0 at th = 0
    assert t.f1[0, 0] == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    assert np.isnan(t.precision[0, 3]) and np.isnan(t.original_metric[0, 3])
    np.testing.assert_allclose(t.original_metric[:, :3], 3 * t.precision[:, :3])
    f1 = choose_thresholds(t, "f1")
    assert [c.index for c in f1] == [0, 0]  # lowest threshold of the best F1
    orig = choose_thresholds(t, "original")
    assert [c.index for c in orig] == [2, 0]  # precision 1.0 first reached at 0.7; class 1 is 1.0 already
    mp = choose_thresholds(t, "min_precision", min_precision=0.7)
    assert [c.threshold for c in mp] == [0.0, 0.0]
    mp = choose_thresholds(t, "min_precision", min_precision=0.99, missing_threshold=0.5)
    assert mp[0].threshold == 0.7


def test_classes_without_data_get_the_fallback():
    t = sweep(np.array([0, 0]), np.array([0.9, 0.8]), np.array([0, 0]), np.linspace(0, 1, 11), 3)
    choices = choose_thresholds(t, "f1", missing_threshold=0.99)
    assert [c.threshold for c in choices] == [0.0, 0.99, 0.99]
    assert "no labelled video" in choices[1].note
    with pytest.raises(PseudoLabelError, match="criterion"):
        choose_thresholds(t, "recall")


def test_thresholds_yaml_round_trip(tmp_path, arid):
    _, _, _, _, table = arid
    choices = choose_thresholds(table, "f1")
    text = thresholds_yaml(choices, table, "f1", "# header", [str(c) for c in range(11)], {"note": 1})
    assert text.startswith("# header\ncriterion: f1\nnote: 1\n")
    (tmp_path / "t.yaml").write_text(text)
    spec = load_thresholds_file(tmp_path / "t.yaml", 11)
    assert spec.thresholds == tuple(round(c.threshold, 9) for c in choices)
    rows = table_csv(table).splitlines()
    assert len(rows) == 1 + 11 * 1001 and rows[0].startswith("class,threshold,selected,correct")


def test_search_config():
    cfg = load_search_config(CONFIG_DIR / "pseudo" / "search.yaml")
    assert cfg.grid == (0.0, 1.0, 1001) and cfg.skip_rows == 0 and cfg.criterion == "f1"
    original = load_search_config(CONFIG_DIR / "pseudo" / "search_original.yaml")
    assert original.skip_rows == 3088 and original.criterion == "original" and original.grid == cfg.grid
    assert original.list_csv == "data/arid_unlabel.csv" and original.printout_classes == (10,)


def test_match_ground_truth():
    truth, labelled = match_ground_truth(["a", "b", "c"], {"a": 2, "c": 0, "z": 1}, 3, "gt.csv")
    assert truth.tolist() == [2, -1, 0] and labelled.tolist() == [True, False, True]
    with pytest.raises(PseudoLabelError, match="gt.csv: label 7 of 'a' outside 0..2"):
        match_ground_truth(["a"], {"a": 7}, 3, "gt.csv")
    with pytest.raises(PseudoLabelError, match="none of the 2 videos is listed in gt.csv"):
        match_ground_truth(["x", "y"], {"a": 1}, 3, "gt.csv")
