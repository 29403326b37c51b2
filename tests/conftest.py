"""Shared test fixtures: where the reference data lives, and a small default config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    """``tools/<name>.py`` imported as a module (the tools are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_dir() -> Path:
    """``../shared`` beside the checkout, or ``$NIGHTCRAWLER_SHARED_DIR``."""
    return Path(os.environ.get("NIGHTCRAWLER_SHARED_DIR", REPO_ROOT.parent / "shared"))


def parity_dir() -> Path:
    return Path(os.environ.get("NIGHTCRAWLER_PARITY_DIR", shared_dir() / "parity"))


def golden_dir() -> Path:
    return shared_dir() / "golden"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
