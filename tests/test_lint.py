"""ruff keeps the code base clean; the suite fails when it does not."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.skip("ruff is not installed (scripts/setup.sh installs it)")


def test_ruff_check():
    res = subprocess.run([*_ruff(), "check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format():
    res = subprocess.run([*_ruff(), "format", "--check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
