"""Where the package finds the files it ships: the YAML configs of ``configs/``.

Every default config path in the package comes from :func:`configs_root`, which answers, in this order:
``$NIGHTCRAWLER_CONFIGS`` when set; the checkout's ``configs/`` when the package runs from a git checkout
(editable install or not); the copy that ``pip install .`` puts inside the package (``nightcrawler/configs``).
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIGS_ENV = "NIGHTCRAWLER_CONFIGS"
PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_CONFIGS = PACKAGE_DIR / "configs"  # setup.py maps the checkout's configs/ here in a wheel


class ResourceNotFoundError(FileNotFoundError):
    """A shipped file or folder the package needs is missing (exit code 3, like any missing input)."""


def checkout_root() -> Path | None:
    """The git checkout the package runs from, or None for an installed copy (site-packages)."""
    root = PACKAGE_DIR.parent
    if (root / "setup.py").is_file() and (root / "configs").is_dir():
        return root
    return None


def configs_root() -> Path:
    """The folder holding ``pseudo/``, ``ensemble/``, ``models/`` ... (see the module docstring for the order)."""
    override = os.environ.get(CONFIGS_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise ResourceNotFoundError(
                f"{CONFIGS_ENV}={override} is not a folder; unset it to use the shipped configs"
            )
        return path
    root = checkout_root()
    if root is not None:
        return root / "configs"
    if INSTALLED_CONFIGS.is_dir():
        return INSTALLED_CONFIGS
    raise ResourceNotFoundError(
        f"no configs folder: not in a checkout and {INSTALLED_CONFIGS} is missing (an install without its "
        f"package data); reinstall with `pip install .` or set {CONFIGS_ENV} to a copy of the repository's configs/"
    )


def config_path(*parts: str) -> Path:
    """A file under :func:`configs_root`, e.g. ``config_path("pseudo", "stage1.yaml")``."""
    return configs_root().joinpath(*parts)
