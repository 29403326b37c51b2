"""The entry points (called in-process) on small hand-made PKLs: the search's R under the original criterion,
the vote's test-CSV requirement, and configs/pseudo/stage4_shipped.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from nightcrawler.pseudo.cli import search_main, stage_main, vote_main
from nightcrawler.pseudo.config import CONFIG_DIR
from nightcrawler.pseudo.fuse import softmax
from nightcrawler.pseudo.io import read_pseudo_csv
from nightcrawler.pseudo.search import choose_thresholds, sweep
from nightcrawler.pseudo.vote import read_submission

from .conftest import MODELS

# --------------------------------------------------------------------------------------------- search


def test_original_criterion_counts_positives_over_the_whole_ground_truth_file(tmp_path, write_pkl, capsys):
    """Class 0: at th = 0, 15 rows predicted 0, 3 truly 0; at th = 0.5, 5 rows, 1 truly 0 (same precision 1/5);
    at th = 1.0 none (the original stops). The ground truth lists 20 more class-0 videos without a PKL row, so
    R = 3 over the PKL's videos but 23 over the file. The original's score (2*(s/R)*(t/s))/(s/R) + t/s rounds
    to 0.6 at th = 0 and 0.6000000000000001 at th = 0.5 with R = 23 (a strict improvement: it picks 0.5),
    while with R = 3 both round to 0.6000000000000001 (it would keep 0.0)."""
    names = [f"v{i}.mp4" for i in range(15)]
    preds = np.array([[0.4, 0.3, 0.3]] * 10 + [[0.6, 0.2, 0.2]] * 5)
    truth = [0, 0] + [1] * 8 + [0] + [2] * 4
    write_pkl(tmp_path / "models" / "m" / "m.pkl", preds, names)
    gt_lines = [f"{n},{y}" for n, y in zip(names, truth)] + [f"extra{i}.mp4,0" for i in range(20)]
    (tmp_path / "gt.csv").write_text("\n".join(gt_lines) + "\n")
    (tmp_path / "stage.yaml").write_text(
        "name: hand\nnum_classes: 3\n"
        "inputs: {pkl_name: m.pkl, models: {m: models/m}}\n"
        "output: unused.csv\n"
        "fusion: {input_transform: none, precision: float64, weights: {m: 1.0}}\n"
        "selection: {method: all}\n"
    )
    (tmp_path / "search.yaml").write_text(
        "ground_truth: gt.csv\ngrid: {start: 0.0, stop: 1.0, num: 3}\ncriterion: original\n"
        "output: thresholds.yaml\nprintout_classes: [0]\n"
    )
    args = [
        "--config",
        tmp_path / "search.yaml",
        "--stage-config",
        tmp_path / "stage.yaml",
        "--root",
        tmp_path,
    ]
    assert search_main([*map(str, args), "--original-printout"]) == 0
    printout = capsys.readouterr().out.splitlines()
    assert printout[0] == "real_label_cnt 23"
    assert [line for line in printout if line.startswith("th: ")] == ["th: 0.0", "th: 0.5"]
    doc = yaml.safe_load((tmp_path / "thresholds.yaml").read_text())
    assert doc["selection"]["thresholds"] == [0.5, 1.0, 1.0]  # the original's last printed threshold
    assert doc["classes"][0]["positives"] == 23 and doc["classes"][0]["selected"] == 5
    # the two R's really lead to different choices: the labelled rows' R = 3 picks th = 0
    grid = np.linspace(0.0, 1.0, 3)
    only_pkl_rows = sweep(preds.argmax(1), preds.max(1), np.array(truth), grid, 3)
    assert only_pkl_rows.positives[0] == 3
    assert choose_thresholds(only_pkl_rows, "original")[0].threshold == 0.0
    # the other criteria keep R over the videos with a PKL row
    assert search_main([*map(str, args), "--criterion", "f1", "--out", str(tmp_path / "f1.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "f1.yaml").read_text())["classes"][0]["positives"] == 3


# --------------------------------------------------------------------------------------------- vote

VOTE_NAMES = ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]


@pytest.fixture
def vote_root(tmp_path, write_pkl) -> Path:
    """configs/ensemble/two_models.yaml's layout, PKLs with video_names in their own (shuffled) row orders."""
    root = tmp_path / "root"
    rng = np.random.default_rng(5)
    for folder in ("uniformer_b32_k600", "sf32_k700"):
        for pkl in ("testx32x224x1x1.pkl", "testx32x224x3x3.pkl"):
            order = rng.permutation(len(VOTE_NAMES)) if folder == "sf32_k700" else [2, 0, 3, 1]
            write_pkl(
                root / "exp_pseudo_stage4" / folder / pkl,
                rng.normal(size=(4, 11)),
                [VOTE_NAMES[i] for i in order],
            )
    return root


def _vote(root: Path, *args) -> int:
    config = CONFIG_DIR / "ensemble" / "two_models.yaml"
    return vote_main(["--config", str(config), "--root", str(root), "--no-report", *map(str, args)])


def test_vote_refuses_a_missing_default_test_csv(vote_root, capsys):
    assert _vote(vote_root) == 3
    err = capsys.readouterr().err
    assert f"test CSV not found: {vote_root / 'data' / 'test.csv'}" in err and "--order-from-pkl" in err
    assert not (vote_root / "submission").exists()


def test_vote_refuses_a_missing_explicit_test_csv(vote_root, tmp_path, capsys):
    (vote_root / "data").mkdir()
    (vote_root / "data" / "test.csv").write_text(
        "\n".join(VOTE_NAMES) + "\n"
    )  # present, but not the one asked
    assert _vote(vote_root, "--test-csv", tmp_path / "nowhere.csv") == 3
    assert f"test CSV not found: {tmp_path / 'nowhere.csv'} (--test-csv)" in capsys.readouterr().err
    assert not (vote_root / "submission").exists()


def test_vote_order_from_pkl_only_when_asked(vote_root, capsys):
    assert _vote(vote_root, "--order-from-pkl") == 0
    assert "--order-from-pkl: no test CSV read" in capsys.readouterr().out
    _, names, _, _ = read_submission(vote_root / "submission" / "submission.csv")
    assert names == ["c.mp4", "a.mp4", "d.mp4", "b.mp4"]  # the first PKL's (uniformer 1x1) order
    # with the default test CSV present the rows follow it
    (vote_root / "data").mkdir()
    (vote_root / "data" / "test.csv").write_text("\n".join(VOTE_NAMES) + "\n")
    assert _vote(vote_root) == 0
    ids, names, _, _ = read_submission(vote_root / "submission" / "submission.csv")
    assert names == VOTE_NAMES and ids == [0, 1, 2, 3]
    with pytest.raises(SystemExit) as exc:  # the two ways of ordering exclude each other
        _vote(vote_root, "--order-from-pkl", "--test-csv", vote_root / "data" / "test.csv")
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- stage 4


def test_stage4_shipped_recipe(tmp_path, write_pkl, capsys):
    """0.25 per model, the Sit/Stand 0.8/0.2 rule, then Run/Walk rows replaced by SlowFast: every row sums to 1
    (as the original's shipped stage4.csv); stage4.yaml (the default) still gives 0.95 rows."""
    names = ["plain.mp4", "sit.mp4", "run.mp4", "walk.mp4"]

    def logits(*peaks):  # one row per video: a logit of 4 on the given class
        out = np.zeros((len(peaks), 11))
        out[np.arange(len(peaks)), peaks] = 4.0
        return out

    scores = {  # rows: plain (class 2), SSV2 votes Sit, Run (but SlowFast says Drink), Walk
        "ssv2": logits(2, 6, 5, 9),
        "k600": logits(2, 6, 5, 9),
        "mvit": logits(2, 1, 5, 9),
        "slowfast": logits(2, 1, 0, 9),
    }
    root = tmp_path / "root"
    for role, folder in MODELS.items():
        write_pkl(root / "exp_pseudo_stage3" / folder / "p.pkl", scores[role], names)
    (root / "data").mkdir()
    (root / "data" / "total_unlabel.csv").write_text("\n".join(f"{n},-1" for n in names) + "\n")
    common = ["--root", str(root), "--pkl-name", "p.pkl", "--no-report"]
    shipped = str(CONFIG_DIR / "pseudo" / "stage4_shipped.yaml")
    assert stage_main(4, ["--config", shipped, *common]) == 0
    assert "stage4_shipped: kept 4 of 4" in capsys.readouterr().out

    got_names, labels, probs = read_pseudo_csv(root / "data" / "pseudo" / "stage4_shipped.csv")
    p = {role: softmax(s, np.float64) for role, s in scores.items()}
    assert got_names == names
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        probs[0], 0.25 * (p["ssv2"][0] + p["k600"][0] + p["mvit"][0] + p["slowfast"][0]), atol=1e-6
    )
    np.testing.assert_allclose(probs[1], 0.8 * p["ssv2"][1] + 0.2 * p["k600"][1], atol=1e-6)
    np.testing.assert_allclose(probs[2:], p["slowfast"][2:], atol=1e-6)  # Run / Walk rows: SlowFast's
    assert labels.tolist() == [2, 6, 0, 9]  # the Run row took SlowFast's Drink

    assert stage_main(4, common) == 0  # the default config: the shipped script's 0.95 rule, no replacement
    _, labels, probs = read_pseudo_csv(root / "data" / "pseudo" / "stage4.csv")
    np.testing.assert_allclose(probs.sum(axis=1), [0.95, 1.0, 0.95, 0.95], rtol=0, atol=1e-6)
    assert labels.tolist() == [2, 6, 5, 9]
