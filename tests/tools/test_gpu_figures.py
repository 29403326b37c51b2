"""benchmarks/gpu_figures.py: the CPU ``--tiny`` smoke run measures every row; user errors end in one paragraph.

Speed itself is never asserted here (the figures live in docs/PERFORMANCE.md); the checks are that every
model/workload/precision/attention combination and every loader worker count has a positive, finite figure.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_figures.py"
TINY = {"uniformer_tiny": "Uniformer", "mvit_tiny": "MViT", "sf_tiny": "SF"}
KERNELS = {"Uniformer": ["sdpa", "explicit"], "MViT": ["sdpa", "explicit"], "SF": ["none"]}


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_tiny_cpu_run_reports_every_combination(tmp_path):
    out = tmp_path / "figures.json"
    proc = _run(tmp_path, "--device", "cpu", "--tiny", "--compile-backend", "aot_eager", "--json", str(out))
    assert proc.returncode == 0, proc.stderr

    data = json.loads(out.read_text())
    assert data["complete"] is True and data["device_type"] == "cpu" and data["device"].startswith("CPU ")
    assert data["tf32"] is False and data["settings"]["threads"] == 1
    assert (data["settings"]["warmup"], data["settings"]["iters"], data["settings"]["workers"]) == (
        1,
        1,
        [0, 1],
    )
    bf16_skipped = [s for s in data["skipped"] if s.get("precision") == "bf16" and "model" not in s]
    precisions = ["fp32"] if bf16_skipped else ["fp32", "bf16"]
    assert len(data["skipped"]) == len(bf16_skipped), data["skipped"]
    if bf16_skipped:  # a build without CPU bf16 autocast says why
        assert bf16_skipped[0]["reason"] and "bf16" in proc.stderr

    models = [r for r in data["rows"] if r["workload"] != "loader" and r["speedup"] == "none"]
    expected = [
        (name, workload, precision, attention)
        for name, arch in TINY.items()
        for workload in ("train", "test3x3")
        for attention in KERNELS[arch]
        for precision in precisions
    ]
    assert [(r["model"], r["workload"], r["precision"], r["attention"]) for r in models] == expected
    for row in models:
        assert row["arch"] == TINY[row["model"]] and (row["frames"], row["crop"]) == (8, 64)
        assert _positive(row["clips_per_s"]) and _positive(row["median_seconds"]), row
        assert row["peak_mem_gb"] is None  # CUDA only
        if row["workload"] == "train":
            assert (row["batch"], row["batch_unit"], row["clips_per_iter"]) == (2, "clips", 2)
            assert "videos_per_s" not in row
        else:
            assert (row["batch"], row["batch_unit"], row["clips_per_iter"]) == (1, "videos", 9)
            assert _positive(row["videos_per_s"])
            assert math.isclose(row["clips_per_s"], 9 * row["videos_per_s"])

    # the speed-up rows come last, each compared with the plain row of its model, workload and precision
    speedups = [r for r in data["rows"] if r.get("speedup", "none") != "none"]
    best = precisions[-1]
    assert [(r["model"], r["speedup"], r["workload"], r["precision"], r["attention"]) for r in speedups] == [
        (name, speedup, workload, best, KERNELS[arch][0])
        for speedup in ("channels_last", "compile")
        for name, arch in TINY.items()
        for workload in ("train", "test3x3")
    ]
    plain = {(r["model"], r["workload"], r["precision"], r["attention"]): r["clips_per_s"] for r in models}
    for row in speedups:
        assert math.isclose(
            row["vs_plain"], row["clips_per_s"] / plain[row["model"], row["workload"], best, row["attention"]]
        )
        assert (
            _positive(row["first_call_seconds"])
            if row["speedup"] == "compile"
            else "first_call_seconds" not in row
        )
    assert data["rows"][-len(speedups) :] == speedups

    loaders = [r for r in data["rows"] if r["workload"] == "loader"]
    assert [(r["model"], r["workers"]) for r in loaders] == [("uniformer_tiny", 0), ("uniformer_tiny", 1)]
    for row in loaders:
        assert (row["precision"], row["attention"], row["peak_mem_gb"]) == (None, None, None)
        assert row["batch"] == 2 and (row["frames"], row["crop"]) == (8, 64)
        assert _positive(row["clips_per_s"]), row

    # the printed table: a header and a rule, then one line per JSON row in the same order
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| model | workload | precision | attention |") and lines[1].startswith("|---")
    assert len(lines) == 2 + len(data["rows"])
    assert "not a performance figure" in proc.stdout


def test_checkpointed_model_trains_with_either_kernel(tmp_path):
    """Activation checkpointing (UniFormer-B32's setting) recomputes blocks in the backward, which must use
    the same attention kernel as the forward."""
    config = tmp_path / "uniformer_tiny_ckpt.yaml"
    base = REPO_ROOT / "configs" / "models" / "uniformer_tiny.yaml"
    config.write_text(f"_BASE_: {base}\nMODEL:\n  USE_CHECKPOINT: True\n  CHECKPOINT_NUM: [0, 0, 3, 0]\n")
    out = tmp_path / "figures.json"
    args = (
        "--device",
        "cpu",
        "--tiny",
        "--models",
        str(config),
        "--workloads",
        "train",
        "--warmup",
        "0",
        "--speedups",
    )
    proc = _run(tmp_path, *args, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["attention"] for r in rows if r["precision"] == "fp32") == ["explicit", "sdpa"]
    assert all(r["use_checkpoint"] and _positive(r["clips_per_s"]) for r in rows)


def test_unknown_model_is_one_paragraph_naming_it(tmp_path):
    proc = _run(tmp_path, "--device", "cpu", "--tiny", "--models", "uniformer_tiny", "no_such_model")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error: unknown model 'no_such_model'") and "uniformer_b32" in first


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_one_paragraph(tmp_path):
    proc = _run(tmp_path, "--device", "cuda", "--tiny")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.startswith("error: --device cuda asked for a GPU, but PyTorch sees no CUDA device")


def test_fp16_rows_and_both_pin_memory_settings(tmp_path):
    """``--precisions fp16`` adds fp16 autocast rows (a GradScaler on CUDA); ``--pin-memory on off`` measures the
    loader with each setting and records what the loader did (pinning needs CUDA)."""
    out = tmp_path / "figures.json"
    args = ("--device", "cpu", "--tiny", "--models", "sf_tiny", "--precisions", "fp32", "fp16", "--speedups")
    proc = _run(tmp_path, *args, "--pin-memory", "on", "off", "--workers", "0", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["settings"]["precisions"] == ["fp32", "fp16"] and data["settings"]["pin_memory"] == [
        "on",
        "off",
    ]
    fp16_skipped = [s for s in data["skipped"] if s.get("precision") == "fp16"]
    precisions = ["fp32"] if fp16_skipped else ["fp32", "fp16"]
    models = [r for r in data["rows"] if r["workload"] != "loader"]
    assert [(r["workload"], r["precision"]) for r in models] == [
        (workload, precision) for workload in ("train", "test3x3") for precision in precisions
    ]
    assert all(_positive(r["clips_per_s"]) for r in models)
    loaders = [r for r in data["rows"] if r["workload"] == "loader"]
    pinning = torch.cuda.is_available()
    assert [(r["workers"], r["pin_memory"], r["pinned"]) for r in loaders] == [
        (0, "on", pinning),
        (0, "off", False),
    ]
    assert all(_positive(r["clips_per_s"]) for r in loaders)
    assert "loader, 0 workers, not pinned" in proc.stdout
