"""tools/benchmark_models.py at a tiny size: the JSON holds a row per model, kernel, precision and mode."""

from __future__ import annotations

import json
import math

from tests.conftest import load_tool


def _tool():
    return load_tool("benchmark_models")


def test_tiny_models_json_rows(tmp_path):
    out = tmp_path / "models.json"
    argv = ["--models", "sf_tiny", "uniformer_tiny", "--device", "cpu", "--iters", "1", "--warmup", "0"]
    assert _tool().main([*argv, "--precision", "fp32", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["threads"] == 1 and data["torch"]
    combos = {(r["config"], r["attention"], r["mode"]) for r in data["rows"]}
    assert combos == {
        ("sf_tiny", "-", "fwd"),
        ("sf_tiny", "-", "fwdbwd"),
        *{("uniformer_tiny", a, m) for a in ("sdpa", "explicit") for m in ("fwd", "fwdbwd")},
    }
    for row in data["rows"]:
        assert row["precision"] == "fp32" and row["input"][2:] == [8, 64, 64]
        assert 0 < row["best_seconds"] <= row["median_seconds"] and math.isfinite(row["median_seconds"])
