"""Shared fixtures of the pseudo-label / vote tests: the golden folders and small synthetic PKLs."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, golden_dir

# the project's interpreter when the checkout has one, else the one running the tests
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)


def run(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """Runs a repo script from an unrelated working directory (paths must come from arguments)."""
    return subprocess.run(
        [str(PYTHON), str(REPO_ROOT / script), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


MODELS = {
    "ssv2": "uniformer_b32_ssv2",
    "k600": "uniformer_b32_k600",
    "mvit": "mvit_b32_k600",
    "slowfast": "sf32_k700",
}


@pytest.fixture(scope="session")
def golden() -> Path:
    path = golden_dir()
    if not all((path / sub).is_dir() for sub in ("pseudo", "vote", "threshold_search")):
        pytest.skip(f"golden reference data not found at {path} (set NIGHTCRAWLER_SHARED_DIR)")
    return path


def _write_pkl(path: Path, preds: np.ndarray, names=None, labels=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "video_preds": np.asarray(preds, dtype=np.float32),
        "video_labels": np.full(len(preds), -1, np.int64) if labels is None else np.asarray(labels, np.int64),
    }
    if names is not None:
        data["video_names"] = list(names)
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


@pytest.fixture
def write_pkl():
    """Writes a PKL as our tester does (``video_names`` optional, absent in the original's PKLs)."""
    return _write_pkl


@pytest.fixture
def golden_pkls(golden):
    """Role -> the four 300-row 1x1 PKLs of golden/pseudo/inputs (no names, as the original's)."""
    return {
        role: golden / "pseudo" / "inputs" / folder / "aridx32x224x1x1.pkl" for role, folder in MODELS.items()
    }
