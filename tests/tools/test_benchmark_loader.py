"""tools/benchmark_loader.py: a smoke run at its smallest settings prints and writes the expected figures.

Checks the table's rows and that every figure is a positive number; speed itself is never asserted here
(it lives in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

from nightcrawler.data.decoders import torchcodec_available
from tests.conftest import REPO_ROOT

ORIGINAL = "original (decord per clip)"


def test_smallest_decode_run_reports_every_method(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools" / "benchmark_loader.py"),
        *("--workloads", "decode", "--reps", "1", "--synthetic", "1", "--train-seeds", "1"),
        *("--no-real", "--no-memory", "--json", str(out)),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr

    methods = [ORIGINAL, "new (auto)", "new (decord)"]
    methods += ["new (torchcodec)"] if torchcodec_available() else []
    methods += ["new (pyav, RGB converter per frame)"]

    results = json.loads(out.read_text())
    assert (results["torch_threads"], results["reps"], results["train_seeds"]) == (1, 1, 1)
    rows = results["rows"]
    assert [r["method"] for r in rows] == methods
    for row in rows:
        assert (row["workload"], row["videos"], row["peak_extra_rss_mb"]) == (
            "decode",
            "synthetic 320x240 H.264",
            None,
        )
        for key in ("cpu_ms_per_clip", "wall_ms_per_clip", "clips_per_cpu_s", "speedup"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["method"], key)
        assert math.isclose(row["clips_per_cpu_s"], 1e3 / row["cpu_ms_per_clip"])
    assert rows[0]["speedup"] == 1.0  # the original against itself
    assert math.isclose(rows[1]["speedup"], rows[0]["cpu_ms_per_clip"] / rows[1]["cpu_ms_per_clip"])

    # the printed markdown table: a header, a rule, then one row per method with the JSON's figures
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| workload | videos | method | CPU ms/clip |") and lines[1].startswith(
        "|---|"
    )
    assert len(lines) == 2 + len(methods)
    for line, row in zip(lines[2:], rows, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == ["decode", "synthetic 320x240 H.264 (1)", row["method"]]
        assert [float(c) for c in cells[3:6]] == [
            round(row["cpu_ms_per_clip"], 1),
            round(row["clips_per_cpu_s"], 1),
            round(row["wall_ms_per_clip"], 1),
        ]
        assert cells[6] == f"{row['speedup']:.2f}x" and cells[7] == "-"
