"""The entry scripts run end to end (subprocess, repo venv) on the golden inputs laid out as in a checkout."""

from __future__ import annotations

import csv
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from nightcrawler.pseudo.fuse import softmax
from nightcrawler.pseudo.io import read_pseudo_csv, read_video_list
from nightcrawler.pseudo.vote import read_submission

from .conftest import MODELS, PYTHON, run

REPO = Path(__file__).resolve().parents[2]
STAGE_DIRS = {1: "exp_adapt_bn", 2: "exp_pseudo_stage1", 3: "exp_pseudo_stage2", 4: "exp_pseudo_stage3"}
GOLDEN_PKL = "aridx32x224x1x1.pkl"


def assert_same_rows(produced: Path, expected: Path) -> None:
    names, labels, probs = read_pseudo_csv(produced)
    e_names, e_labels, e_probs = read_pseudo_csv(expected)
    assert names == e_names
    np.testing.assert_array_equal(labels, e_labels)
    np.testing.assert_allclose(probs, e_probs, rtol=0, atol=1e-6)


@pytest.fixture
def stage_root(golden, tmp_path) -> Path:
    """A checkout-like root: data/total_unlabel.csv and every stage's PKL folders (the golden 1x1 inputs)."""
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    shutil.copy(golden / "pseudo" / "inputs" / "total_unlabel.csv", root / "data" / "total_unlabel.csv")
    for exp in STAGE_DIRS.values():
        for folder in MODELS.values():
            (root / exp / folder).mkdir(parents=True)
            shutil.copy(golden / "pseudo" / "inputs" / folder / GOLDEN_PKL, root / exp / folder / GOLDEN_PKL)
    return root


def test_stage1_with_the_original_argument_names(golden, stage_root, tmp_path):
    inputs = golden / "pseudo" / "inputs"
    out = tmp_path / "legacy" / "stage1.csv"
    proc = run(
        "gen_pseudo_tools/generate_pseudo_label_stage1.py",
        "--gen_label_list_path", inputs / "total_unlabel.csv",
        "--gen_label_pkl_path_ssv2_best", inputs / "uniformer_b32_ssv2" / GOLDEN_PKL,
        "--gen_label_pkl_path_uni_best", inputs / "uniformer_b32_k600" / GOLDEN_PKL,
        "--gen_label_pkl_path_mvit_best", inputs / "mvit_b32_k600" / GOLDEN_PKL,
        "--gen_label_pkl_path_slowfast_best", inputs / "sf32_k700" / GOLDEN_PKL,
        "--path_pseudo_label", out,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "kept 177 of 300" in proc.stdout
    assert_same_rows(out, golden / "pseudo" / "expected" / "stage1.csv")
    for suffix in ("_report.md", "_report.csv", "_report.png", "_decisions.csv"):
        assert (out.parent / f"stage1{suffix}").stat().st_size > 0
    assert (out.parent / "stage1_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out.parent / "stage1_report.csv").read_text().splitlines()
    assert report[0] == "class,name,predicted,kept,mean_confidence,threshold"
    assert report[1].startswith("0,Drink,18,10,") and report[1].endswith(",0.509")


@pytest.mark.parametrize("stage", [2, 3, 4])
def test_stages_in_the_conventional_layout(golden, stage_root, tmp_path, stage):
    proc = run(
        f"gen_pseudo_tools/generate_pseudo_label_stage{stage}.py",
        "--root", stage_root, "--pkl-name", GOLDEN_PKL, "--no-chart",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = stage_root / "data" / "pseudo" / f"stage{stage}.csv"
    assert_same_rows(out, golden / "pseudo" / "expected" / f"stage{stage}.csv")
    assert f"{STAGE_DIRS[stage]}/sf32_k700/{GOLDEN_PKL}" in proc.stdout


def test_stage3_original_default_wiring(golden, stage_root, tmp_path):
    out = tmp_path / "wired.csv"
    proc = run(
        "gen_pseudo_tools/generate_pseudo_label_stage3.py",
        "--root", stage_root, "--pkl-name", GOLDEN_PKL, "--same-pkl", "slowfast=k600", "--out", out, "--no-report",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_same_rows(out, golden / "pseudo" / "expected" / "stage3_default_wiring.csv")
    assert not (tmp_path / "wired_report.md").exists()


def test_stage_thresholds_file_replaces_the_config_table(golden, stage_root, tmp_path):
    """--thresholds FILE (a search YAML's selection block): one threshold of 0.5 for every class keeps the rows
    whose fused maximum (golden decisions.csv, stage-1 fusion) reaches 0.5, not the config table's 177."""
    decisions = list(csv.DictReader(open(golden / "pseudo" / "expected" / "decisions.csv")))
    fused_max = np.array([float(r["fused_max"]) for r in decisions])
    assert np.abs(fused_max - 0.5).min() > 1e-5  # no row on the edge: float32 vs float64 cannot matter
    keep = fused_max >= 0.5
    expected_names = [r["id"] for r, k in zip(decisions, keep) if k]
    expected_labels = [int(r["fused_argmax"]) for r, k in zip(decisions, keep) if k]
    assert len(expected_names) not in (0, 177, 300)
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(
        "# Thresholds from gen_pseudo_tools/search_thresholds.py (hand-written for the test)\n"
        "criterion: f1\n"
        f"selection: {{method: thresholds, thresholds: {[0.5] * 11}}}\n"
        "classes: []\n"
    )
    out = tmp_path / "out.csv"
    proc = run(
        "gen_pseudo_tools/generate_pseudo_label_stage1.py",
        "--root", stage_root, "--pkl-name", GOLDEN_PKL, "--thresholds", thresholds, "--out", out, "--no-report",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"kept {len(expected_names)} of 300" in proc.stdout
    names, labels, probs = read_pseudo_csv(out)
    assert names == expected_names
    assert labels.tolist() == expected_labels
    np.testing.assert_allclose(probs.max(axis=1), fused_max[keep], rtol=0, atol=1e-6)
    # a table of the wrong length is refused, naming the file, and nothing is written
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds: [0.5, 0.5]\n")
    proc = run(
        "gen_pseudo_tools/generate_pseudo_label_stage1.py",
        "--root", stage_root, "--pkl-name", GOLDEN_PKL, "--thresholds", bad, "--out", tmp_path / "bad.csv",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 3  # data error (utils/errors.py)
    assert str(bad) in proc.stderr and "must list 11 numbers" in proc.stderr
    assert not (tmp_path / "bad.csv").exists()


def _named_copy(src: Path, dst: Path, names: list[str], order: np.ndarray) -> None:
    """The tester's format: the same rows with video_names, in a different row order."""
    with open(src, "rb") as f:
        data = pickle.load(f)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as f:
        pickle.dump(
            {
                "video_preds": data["video_preds"][order],
                "video_labels": data["video_labels"][order],
                "video_names": [names[i] for i in order],
            },
            f,
        )


def test_stage2_on_named_pkls_in_any_order(golden, tmp_path):
    """PKLs written by our tester (names, own row order) align by name and give the golden rows."""
    inputs = golden / "pseudo" / "inputs"
    names, _ = read_video_list(inputs / "total_unlabel.csv")
    rng = np.random.default_rng(1)
    root = tmp_path / "named"
    for folder in MODELS.values():
        _named_copy(
            inputs / folder / GOLDEN_PKL,
            root / "exp_pseudo_stage1" / folder / "total_unlabelx32x224x1x1.pkl",
            names,
            rng.permutation(len(names)),
        )
    # no list CSV under root: the order of the first PKL is used, so compare as sets of rows
    proc = run("gen_pseudo_tools/generate_pseudo_label_stage2.py", "--root", root, "--no-chart", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = read_pseudo_csv(root / "data" / "pseudo" / "stage2.csv")
    exp = read_pseudo_csv(golden / "pseudo" / "expected" / "stage2.csv")
    index = {n: i for i, n in enumerate(got[0])}
    assert sorted(got[0]) == sorted(exp[0])
    rows = [index[n] for n in exp[0]]
    np.testing.assert_array_equal(got[1][rows], exp[1])
    np.testing.assert_allclose(got[2][rows], exp[2], rtol=0, atol=1e-6)
    # with the list CSV in place, the output follows the list order exactly
    (root / "data" / "total_unlabel.csv").write_text((inputs / "total_unlabel.csv").read_text())
    proc = run(
        "gen_pseudo_tools/generate_pseudo_label_stage2.py", "--root", root, "--no-report", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert_same_rows(root / "data" / "pseudo" / "stage2.csv", golden / "pseudo" / "expected" / "stage2.csv")


def test_misaligned_pkls_fail_clearly(golden, tmp_path):
    inputs = golden / "pseudo" / "inputs"
    names, _ = read_video_list(inputs / "total_unlabel.csv")
    root = tmp_path / "bad"
    for i, folder in enumerate(MODELS.values()):
        these = list(names)
        if i == 2:
            these[5] = "Wave/not_in_the_others.mp4"
        _named_copy(
            inputs / folder / GOLDEN_PKL, root / "exp_adapt_bn" / folder / "p.pkl", these, np.arange(300)
        )
    proc = run(
        "gen_pseudo_tools/generate_pseudo_label_stage1.py",
        "--root",
        root,
        "--pkl-name",
        "p.pkl",
        cwd=tmp_path,
    )
    assert proc.returncode == 3  # data error (utils/errors.py)
    assert "mvit_b32_k600/p.pkl" in proc.stderr and "uniformer_b32_ssv2/p.pkl" in proc.stderr
    assert "row 5: '5.mp4' vs 'Wave/not_in_the_others.mp4'" in proc.stderr
    assert not (root / "data" / "pseudo" / "stage1.csv").exists()


def test_two_model_stage_config(golden, tmp_path):
    """The demo's case: configs/pseudo/two_models.yaml, model folders and list given on the command line."""
    inputs = golden / "pseudo" / "inputs"
    a, b = inputs / "uniformer_b32_k600" / GOLDEN_PKL, inputs / "sf32_k700" / GOLDEN_PKL
    proc = run(
        "gen_pseudo_tools/generate_pseudo_label_stage2.py",
        "--config", REPO / "configs" / "pseudo" / "two_models.yaml", "--root", inputs,
        "--model-dir", "uniformer=uniformer_b32_k600", "--model-dir", "slowfast=sf32_k700",
        "--pkl-name", GOLDEN_PKL, "--list", inputs / "total_unlabel.csv", "--out", tmp_path / "out.csv",
        "--no-report",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names, labels, probs = read_pseudo_csv(tmp_path / "out.csv")
    with open(a, "rb") as fa, open(b, "rb") as fb:
        pa, pb = pickle.load(fa)["video_preds"], pickle.load(fb)["video_preds"]
    fused = 0.5 * softmax(pa, np.float64) + 0.5 * softmax(pb, np.float64)
    conf = fused.max(axis=1)
    keep = conf > conf.mean() - 0.5 * conf.std(ddof=1)
    all_names, _ = read_video_list(inputs / "total_unlabel.csv")
    assert names == [n for n, k in zip(all_names, keep) if k]
    np.testing.assert_array_equal(labels, fused.argmax(axis=1)[keep])
    np.testing.assert_allclose(probs, fused[keep], atol=1e-12)


def test_search_original_printout_and_yaml(golden, tmp_path):
    """configs/pseudo/search_original.yaml holds the original's offset and paths: lay the inputs out as it expects."""
    src = golden / "threshold_search" / "inputs"
    root = tmp_path / "search"
    for folder in MODELS.values():
        (root / "exp_adapt_bn" / folder).mkdir(parents=True)
        shutil.copy(src / folder / GOLDEN_PKL, root / "exp_adapt_bn" / folder / GOLDEN_PKL)
    shutil.copytree(src / "data", root / "data")
    shutil.copy(src / "arid_unlabel.csv", root / "data" / "arid_unlabel.csv")
    proc = run(
        "gen_pseudo_tools/search_thresholds.py",
        "--config", REPO / "configs" / "pseudo" / "search_original.yaml", "--root", root,
        "--pkl-name", GOLDEN_PKL, "--original-printout", "--table", tmp_path / "table.csv",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (golden / "threshold_search" / "expected" / "stdout_class10.txt").read_text()
    assert "ZeroDivisionError at grid index 802" in proc.stderr
    text = (root / "data" / "pseudo" / "thresholds_original.yaml").read_text()
    assert "criterion: original" in text and "videos_evaluated: 300" in text
    doc = yaml.safe_load(text)
    assert doc["selection"]["thresholds"][10] == 0.428 and doc["selection"]["thresholds"][7] == 0.982
    assert len((tmp_path / "table.csv").read_text().splitlines()) == 1 + 11 * 1001


def test_vote_reproduces_the_original_files(golden, tmp_path):
    root = tmp_path / "vote"
    shutil.copytree(golden / "vote" / "inputs", root)
    proc = run(
        "test_ensemble_vote.py", "--root", root, "--probability-format", "torch", "--no-chart", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    expected = golden / "vote" / "expected"
    for m in range(5):
        produced = (root / "submission" / f"arid_pred_{m}.csv").read_bytes()
        assert produced == (expected / "submission" / f"arid_pred_{m}.csv").read_bytes()
    assert (root / "submission" / "arid_pred.csv").read_bytes() == (expected / "arid_pred.csv").read_bytes()
    assert 'rows from {"1": 349, "4": 51}' in proc.stdout
    assert (root / "submission" / "arid_pred_report.md").exists()


def test_vote_two_models_on_named_pkls(golden, tmp_path):
    """The two-model ensemble config on tester-format PKLs (names, shuffled rows), plain-number output."""
    src = golden / "vote" / "inputs"
    names, _ = read_video_list(src / "data" / "test.csv")
    root = tmp_path / "two"
    rng = np.random.default_rng(2)
    preds = {}
    for role, folder in (("uniformer", "uniformer_b32_k600"), ("slowfast", "sf32_k700")):
        for golden_name, name in (
            ("testx32x224x1x3.pkl", "testx32x224x1x1.pkl"),
            ("testx32x224x3x3.pkl",) * 2,
        ):
            path = src / "exp_pseudo_stage4" / folder / golden_name
            _named_copy(path, root / "exp_pseudo_stage4" / folder / name, names, rng.permutation(len(names)))
            with open(path, "rb") as f:
                preds[role, name] = pickle.load(f)["video_preds"]
    out_dir = tmp_path / "out"
    proc = run(
        "test_ensemble_vote.py",
        "--root", root, "--config", REPO / "configs" / "ensemble" / "two_models.yaml", "--out-dir", out_dir,
        "--test-csv", src / "data" / "test.csv", "--intermediate", tmp_path / "inter.npz", "--no-report",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fused = {
        view: 0.5 * softmax(preds["uniformer", f"testx32x224x{view}.pkl"], np.float64)
        + 0.5 * softmax(preds["slowfast", f"testx32x224x{view}.pkl"], np.float64)
        for view in ("1x1", "3x3")
    }
    pred = {view: f.argmax(axis=1) for view, f in fused.items()}
    mean = (
        fused["1x1"] / fused["1x1"].sum(1, keepdims=True) + fused["3x3"] / fused["3x3"].sum(1, keepdims=True)
    ) / 2
    tie_winner = np.where(
        mean[np.arange(400), pred["1x1"]] >= mean[np.arange(400), pred["3x3"]], pred["1x1"], pred["3x3"]
    )
    expected_vote = np.where(pred["1x1"] == pred["3x3"], pred["1x1"], tie_winner)
    ids, got_names, classes, probs = read_submission(out_dir / "submission.csv")
    assert got_names == names and ids == list(range(400))
    np.testing.assert_array_equal(classes, expected_vote)
    np.testing.assert_allclose(probs, mean, atol=1e-12)
    _, _, c11, _ = read_submission(out_dir / "pred_1x1.csv")
    np.testing.assert_array_equal(c11, pred["1x1"])
    assert np.load(tmp_path / "inter.npz")["vote"].tolist() == expected_vote.tolist()


@pytest.mark.parametrize(
    "script, words",
    [
        (
            "gen_pseudo_tools/generate_pseudo_label_stage4.py",
            ["--gen_label_pkl_path_ssv2_best", "--path_pseudo_label"],
        ),
        ("gen_pseudo_tools/search_thresholds.py", ["--original-printout", "--skip-rows"]),
        ("test_ensemble_vote.py", ["--root", "--test-csv", "--order-from-pkl", "--out-dir", "--vote"]),
    ],
)
def test_help(script, words, tmp_path):
    proc = run(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0
    for word in words:
        assert word in proc.stdout


def test_package_does_not_import_torch(tmp_path):
    code = "import sys, nightcrawler.pseudo.cli; print('torch' in sys.modules)"
    proc = subprocess.run([str(PYTHON), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
