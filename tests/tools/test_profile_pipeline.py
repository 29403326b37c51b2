"""tools/profile_pipeline.py: the model mode at a tiny size (a subprocess, as a user runs it) and the run mode on
fake work folders in the formats tools/benchmark_method.py and tools/demo.py write.

Speed itself is never asserted (the measured profiles live in docs/PERFORMANCE.md); the checks are that every
phase is reported, the figures are positive and the shares add up.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from nightcrawler.utils.errors import EXIT_DATA
from tests.conftest import REPO_ROOT

# the phases doing real work; the remainders ("other", and the copy to the CPU itself) may be ~0
WORKING_PHASES = {
    "train": {"decode", "transforms", "forward", "backward", "loss_clip", "optimizer"},
    "test": {"decode", "transforms", "forward", "fusion"},
}


def _tool():
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    try:
        return __import__("profile_pipeline")
    finally:
        sys.path.remove(str(REPO_ROOT / "tools"))


def test_model_mode_reports_every_phase_of_training_and_test(tmp_path):
    out = tmp_path / "profile.json"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools" / "profile_pipeline.py"),
        "model",
        *("--cfg", "uniformer_tiny", "--frames", "8", "--size", "64", "--iters", "1", "--warmup", "1"),
        *("--test-videos", "1", "--video-frames", "16", "--video-width", "96", "--video-height", "72"),
        *("--procedural", "--threads", "1", "--json", str(out)),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    tool = _tool()
    result = json.loads(out.read_text())
    assert result["mode"] == "model" and result["device"] == "cpu"
    assert result["config"].startswith("uniformer_tiny") and "tools/profile_pipeline.py" in result["command"]
    assert (result["clip"], result["iterations"], result["warmup_iterations"]) == ("8x64x64", 1, 1)
    assert result["clips_per_iteration"] == 2  # one video, AUG.NUM_SAMPLE 2 of the experiments' recipe
    assert (result["test_videos"], result["test_setting"]) == (1, "3x3@g0.25")

    rows = result["rows"]
    for part, phases in (("train", tool.TRAIN_PHASES), ("test", tool.TEST_PHASES)):
        part_rows = [r for r in rows if r["part"] == part]
        assert [r["phase"] for r in part_rows] == [p for p, _ in phases]
        for row in part_rows:
            assert math.isfinite(row["seconds"]) and row["seconds"] >= 0, row
            if row["phase"] in WORKING_PHASES[part]:
                assert row["seconds"] > 0, row
        assert math.isclose(sum(r["share_of_part"] for r in part_rows), 1.0, abs_tol=1e-9)
        part_seconds = result[f"{part}_seconds"]
        assert math.isclose(sum(r["seconds"] for r in part_rows), part_seconds, rel_tol=1e-6)
    assert math.isclose(sum(r["share"] for r in rows), 1.0, abs_tol=1e-9)
    assert math.isclose(sum(r["seconds"] for r in rows), result["total_seconds"], rel_tol=1e-6)

    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| part | phase | seconds |") and len(table) == 2 + len(rows) + 1


# ---------------------------------------------------------------------------------------------- run mode


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def _seed_record(seed: int, total: float) -> dict:
    """A record.json as SeedRun writes it (the fields the profile reads), 40 s of steps."""
    steps = {
        "synthetic dark-video set": 2.0,
        "adapt-BN training of uniformer_tiny and its tests": 10.0,
        "uniformer_tiny: BN statistics of normal-light clips": 1.0,
        "uniformer_tiny: source-only tests (dark test with and without gamma, normal-light val)": 3.0,
        "pseudo labels, stage 1": 0.5,
        "stage-1 pseudo-label training of uniformer_tiny and its tests": 20.0,
        "final ensemble and vote": 0.5,
        "something new": 3.0,
    }
    return {
        "seed": seed,
        "seconds": {"supervised": 16.0, "pseudo_stages": 20.5, "vote": 0.5, "total": total},
        "step_seconds": {f"seed {seed}: {k}": v for k, v in steps.items()},
    }


def _log(checkout: Path, launches: list[str]) -> str:
    lines = [f"\n$ /venv/bin/python {checkout}/{script}\nsome output\n" for script in launches]
    return "".join(lines)


@pytest.mark.parametrize("pretraining", ["summary", "cache_logs"])
def test_run_mode_breaks_a_benchmark_folder_down_by_kind_of_step(tmp_path, capsys, pretraining):
    work = tmp_path / "benchmark_work"
    for seed in (0, 1):
        _write(work / f"seed_{seed}" / "record.json", _seed_record(seed, total=41.0))
    variants = {
        "tent": {
            "variant tent: uniformer_tiny: BN statistics": 4.0,
            "variant tent: uniformer_tiny: dark test": 2.0,
        },
        "distill": {"variant distill: uniformer_tiny: stage-1 training and dark test": 30.0},
    }
    _write(work / "seed_0" / "variants" / "record.json", {"seed": 0, "variants": {}, "seconds": variants})
    seconds = {"seed_0": 41.0, "seed_1": 41.0, "total": 132.0}
    if pretraining == "summary":
        seconds["source_pretraining"] = 50.0
    else:  # a later run reused the cache and rewrote benchmark.json: 10 s corpus + 40 s of training log
        stamps = ["[12/04 04:41:51][INFO] start", "no stamp", "[12/04 04:42:31][INFO] end"]
        _write(work / "pretrain" / "m-1" / "run" / "stdout.log", "\n".join(stamps) + "\n")
    _write(
        work / "benchmark.json", {"plan": {"plan_file": "configs/benchmark/plan.yaml"}, "seconds": seconds}
    )
    checkout = tmp_path / "checkout"
    pretrain = [
        f"tools/make_synthetic.py --out {work}/pretrain/corpus-1",
        f"tools/run_net.py OUTPUT_DIR {work}/pretrain/m/run",
    ]
    corpus_line = f"synthetic set written to {work}/pretrain/corpus-1 in 10.0 s\n"
    _write(work / "run.log", corpus_line + _log(checkout, pretrain + ["tools/run_net.py --cfg x"] * 5))

    out = tmp_path / "run.json"
    assert _tool().main(["run", "--workdir", str(work), "--no-startup", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["mode"], result["config"], result["seeds"]) == ("run", "configs/benchmark/plan.yaml", 2)
    assert result["startup"] is None

    rows = {r["phase"]: r for r in result["rows"]}
    expected = {  # kind: (seconds, launches)
        "data": (4.0, 2),
        "supervised": (22.0, 4),
        "tests": (6.0, 2),
        "pseudo_labels": (1.0, 2),
        "pseudo_stages": (40.0, 2),
        "vote": (1.0, 2),
        "other_steps": (6.0, 2),
        "driver": (2.0, 0),  # 41 s per seed, 40 s of steps
        "variant_bn": (4.0, 1),
        "variant_tests": (2.0, 1),
        "variant_training": (30.0, 1),
        # the two launches writing under pretrain/, or the corpus line and the training log of the cache
        "pretraining_total": (50.0, 2),
    }
    assert set(rows) == set(expected)
    for kind, (seconds, launches) in expected.items():
        assert math.isclose(rows[kind]["seconds"], seconds) and rows[kind]["launches"] == launches, kind
    assert math.isclose(result["total_seconds"], 168.0)
    assert math.isclose(sum(r["share"] for r in result["rows"]), 1.0, abs_tol=1e-9)
    assert result["launches"] == 21 and result["launches_in_log"]["total"] == 7
    label = rows["pretraining_total"]["label"]
    assert label.startswith("source pre-training: corpus + models") and ("estimated" in label) == (
        pretraining == "cache_logs"
    )
    assert f"| {label} | 50.0 |" in capsys.readouterr().out


def test_run_mode_on_a_demo_folder_and_the_start_up_estimate(tmp_path):
    tool = _tool()
    work = tmp_path / "demo_work"
    _write(work / "seed" / "record.json", _seed_record(0, total=40.0))
    _write(work / "summary.json", {"seconds": {"total": 100.0}})  # the demo: pre-training = total - the seed
    _write(work / "demo.log", _log(REPO_ROOT, ["tools/run_net.py --cfg x"]))
    result = tool.run_run_mode(tool.parse_args(["run", "--workdir", str(work), "--no-startup"]))
    rows = {r["phase"]: r for r in result["rows"]}
    assert math.isclose(rows["pretraining_total"]["seconds"], 60.0) and rows["driver"]["seconds"] == 0.0
    assert rows["pretraining_total"]["label"].endswith("(demo total minus its seed)")

    startup = {"fork_run_net_help": 0.5, "subprocess_run_net_help": 3.0}
    seconds, launches, _ = tool.collect_steps(tool.find_run_files(work))
    est = tool.run_rows(seconds, launches, startup)
    assert [r["startup_fork_seconds"] for r in est] == [0.5 * r["launches"] for r in est]
    assert [r["startup_subprocess_seconds"] for r in est] == [3.0 * r["launches"] for r in est]


@pytest.mark.parametrize("layout", ["missing", "no_records", "bad_json"])
def test_run_mode_user_errors_are_data_errors(tmp_path, capsys, layout):
    work = tmp_path / "w"
    if layout != "missing":
        work.mkdir()
    if layout == "bad_json":
        _write(work / "seed_0" / "record.json", "{not json")
    assert _tool().main(["run", "--workdir", str(work), "--no-startup"]) == EXIT_DATA
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(work) in err and "Traceback" not in err
