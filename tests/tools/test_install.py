"""`pip install .` (not editable) gives a working package: console scripts, and configs found inside the package.

The install goes into a throw-away venv without downloading anything: the venv sees the project venv's
site-packages through a plain path line in a ``.pth`` file (nested ``.pth`` files there, such as the editable
install's finder, are not processed, so ``import nightcrawler`` finds the installed copy, not the checkout).
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nightcrawler import resources
from nightcrawler.method import runner
from tests.conftest import REPO_ROOT


def _build_tools_missing() -> str | None:
    """Why the install test cannot run here, or None."""
    for module in ("venv", "pip", "setuptools"):
        if importlib.util.find_spec(module) is None:
            return f"the '{module}' module is not available to {sys.executable}"
    version = importlib.metadata.version("setuptools")  # not imported here: it would patch distutils
    major, minor = (int(x) for x in version.split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:
        return f"setuptools {version} builds no wheel without the 'wheel' package (pip install -e '.[dev]')"
    return None


def _copy_sources(dest: Path) -> None:
    """The checkout's tracked (and new, not ignored) files, so that the build writes nothing into the checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT, capture_output=True, check=True, timeout=60,
        ).stdout.decode()  # fmt: skip
        names = [n for n in listed.split("\0") if n and (REPO_ROOT / n).is_file()]
    except (OSError, subprocess.SubprocessError):  # not a git checkout: the files the build reads
        names = None
    if names is None:
        for name in ("setup.py", "pyproject.toml", "README.md"):
            shutil.copy2(REPO_ROOT / name, dest / name)
        for name in ("nightcrawler", "configs"):
            shutil.copytree(REPO_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        return
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, dest / name)


def _clean_env(venv: Path) -> dict[str, str]:
    dropped = ("PYTHONPATH", "PYTHONHOME", resources.CONFIGS_ENV)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["COLUMNS"] = "1000"  # --help lines unwrapped, paths in one piece
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (
        f"{' '.join(map(str, cmd))} -> exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    return res


LOAD_DEFAULT_CONFIGS = """
import json, nightcrawler
from nightcrawler.pseudo.config import load_ensemble_config, load_stage_config
from nightcrawler.pseudo.cli import vote_parser
from nightcrawler.resources import config_path, configs_root
stage = load_stage_config(config_path("pseudo", "stage1.yaml"))
ensemble = load_ensemble_config(vote_parser().get_default("config"))
print(json.dumps({"package": nightcrawler.__file__, "configs": str(configs_root()), "stage": stage.source,
    "stage_models": sorted(stage.models), "ensemble": ensemble.source, "modes": [m.name for m in ensemble.modes]}))
"""


MISSING = _build_tools_missing()


@pytest.mark.skipif(MISSING is not None, reason=f"cannot build and install: {MISSING}")
def test_non_editable_install_has_console_scripts_and_packaged_configs(tmp_path):
    t0 = time.time()
    left_behind = [p for p in ("build", "dist") if not (REPO_ROOT / p).exists()]
    source, venv = tmp_path / "source", tmp_path / "venv"
    source.mkdir()
    _copy_sources(source)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    # the project venv's packages (torch, numpy, pip, setuptools ...) without its editable nightcrawler finder
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site_packages / "_project_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    env = _clean_env(venv)
    # --ignore-installed: pip sees the project venv's nightcrawler through the .pth; leave it alone
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    _run([*pip, "--ignore-installed", "--no-cache-dir", "-q", str(source)], tmp_path, env, timeout=300)
    assert (site_packages / "nightcrawler" / "configs" / "pseudo" / "stage1.yaml").is_file()

    # configs are found inside the installed package, and nothing resolves into the checkout
    printed = _run([str(python), "-c", LOAD_DEFAULT_CONFIGS], tmp_path, env).stdout
    found = json.loads(printed.strip().splitlines()[-1])
    installed = site_packages / "nightcrawler"
    assert Path(found["package"]).resolve() == (installed / "__init__.py").resolve()
    assert Path(found["configs"]).resolve() == (installed / "configs").resolve()
    for key in ("stage", "ensemble"):
        path = Path(found[key]).resolve()
        assert path.is_relative_to(installed.resolve()) and not path.is_relative_to(REPO_ROOT), found
    assert found["stage_models"] == ["k600", "mvit", "slowfast", "ssv2"] and found["modes"], found

    # every console script the wheel declares answers --help from a folder outside the checkout
    dist_info = next(site_packages.glob("nightcrawler-*.dist-info"))
    entry_points = configparser.ConfigParser()
    entry_points.read(dist_info / "entry_points.txt")
    scripts = sorted(entry_points["console_scripts"])
    assert "nightcrawler-predict" in scripts and "nightcrawler-ensemble-vote" in scripts
    assert {f"nightcrawler-pseudo-stage{k}" for k in range(1, 5)} <= set(scripts)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: _run([str(venv / "bin" / s), "--help"], tmp_path, env), scripts))
    for script, res in zip(scripts, results):
        assert res.stdout.startswith(f"usage: {script}"), (script, res.stdout[:300])
    stage_help = results[scripts.index("nightcrawler-pseudo-stage1")].stdout
    assert f"(default: {installed / 'configs' / 'pseudo' / 'stage1.yaml'})" in stage_help
    assert "defaults of stage1.yaml" in stage_help  # the epilog read the installed config

    assert [p for p in left_behind if (REPO_ROOT / p).exists()] == [], "the build wrote into the checkout"
    assert time.time() - t0 < 120


def test_configs_root_is_the_checkout_and_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(resources.CONFIGS_ENV, raising=False)
    assert resources.checkout_root() == REPO_ROOT
    assert resources.configs_root() == REPO_ROOT / "configs"
    monkeypatch.setenv(resources.CONFIGS_ENV, str(tmp_path))
    assert resources.config_path("pseudo", "stage1.yaml") == tmp_path / "pseudo" / "stage1.yaml"
    monkeypatch.setenv(resources.CONFIGS_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="NIGHTCRAWLER_CONFIGS=.*missing is not a folder"):
        resources.configs_root()


def test_runner_outside_a_checkout_names_the_missing_script(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "REPO", tmp_path)
    run = runner.Runner(tmp_path / "log.txt")
    with pytest.raises(runner.StepFailed, match=r"runs tools/run_net.py of a Nightcrawler git ch") as info:
        run("tools/run_net.py", "--help", what="train")
    assert info.value.exit_code == 2 and not (tmp_path / "log.txt").exists()
