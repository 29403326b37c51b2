"""The main job end to end: `scripts/demo.sh --quick` through the real launcher, stage and vote scripts."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_quick_demo_runs_every_step_and_writes_a_complete_submission(tmp_path):
    work = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "demo.py"), "--quick", "--workdir", str(work), "--seed", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, (
        res.stdout[-3000:] + res.stderr[-3000:] + (work / "demo.log").read_text()[-3000:]
    )
    summary = json.loads((work / "summary.json").read_text())
    names = [s["name"] for s in summary["steps"]]
    assert names[:3] == ["source_only", "gamma_tta", "adapt_bn"]
    assert names[3:] == ["pseudo_stage1", "final_vote", "normal_light_val"]
    for step in summary["steps"]:
        assert 0.0 <= step["top1_mean"] <= 1.0 and step["top1_per_seed"] == [step["top1_mean"]]
    assert summary["seconds"]["total"] > 0
    assert (work / "summary.md").read_text().count("|") > 10 and (work / "summary.png").stat().st_size > 1000
    # the submission covers every test video once, in test.csv order, with a class and probabilities
    test_rows = [r[0] for r in csv.reader(open(work / "seed" / "data" / "test.csv"))]
    with open(summary["submission"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["Video"] for r in rows] == test_rows
    assert [int(r["VideoID"]) for r in rows] == list(range(len(test_rows)))
    num_classes = len(json.loads((work / "seed" / "data" / "synthetic.json").read_text())["class_names"])
    assert num_classes == summary["plan"]["data"]["num_classes"]
    assert all(0 <= int(r["ClassID"]) < num_classes for r in rows)
    assert f"p{num_classes}" not in rows[0]
    probs = [[float(r[f"p{c}"]) for c in range(num_classes)] for r in rows]
    assert all(abs(sum(p) - 1) < 1e-3 for p in probs)
    # the pseudo labels the stage script wrote cover the unlabelled dark videos, one probability per class
    stage_csv = work / "seed" / "data" / "pseudo" / "stage1.csv"
    unlabelled = {r[0] for r in csv.reader(open(work / "seed" / "data" / "total_unlabel.csv"))}
    pseudo_rows = list(csv.reader(open(stage_csv)))
    assert pseudo_rows and all(len(r) == 2 + num_classes for r in pseudo_rows)
    assert {r[0] for r in pseudo_rows} <= unlabelled
