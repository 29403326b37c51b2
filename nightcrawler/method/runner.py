"""Runs the project's entry points (``tools/*.py``, the stage and vote scripts) as subprocesses, with a log and
a progress line per step (elapsed time and an estimate of what is left)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from nightcrawler.resources import PACKAGE_DIR, checkout_root
from nightcrawler.utils.errors import EXIT_CONFIG

# the steps are scripts of the git checkout (tools/*.py, exp_*/); an installed copy has none of them
REPO = checkout_root() or PACKAGE_DIR.parent


class StepFailed(RuntimeError):
    """An entry point exited with an error; the message names the step, the step's own ``error:`` paragraph
    when it printed one, and the log holding its output. ``exit_code`` is the step's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):
        return (type(self), (str(self), self.exit_code))


def _last_error_line(log: Path, tail_bytes: int = 65536) -> str | None:
    """The last ``error: ...`` line (the entry-point convention of nightcrawler.utils.cli) in a log's tail."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = [line for line in text.splitlines() if line.startswith("error: ")]
    return found[-1] if found else None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


class Progress:
    """Elapsed time and an estimate of the rest from planned work units: each step declares its units before
    it runs; the estimate is the seconds per unit measured so far times the units left."""

    def __init__(self, total_units: float, prefix: str = "[method]") -> None:
        self.total = float(total_units)
        self.done = 0.0
        self.start = time.time()
        self.prefix = prefix

    def add(self, units: float) -> None:
        """Declares more planned work (e.g. a step the plan could not foresee)."""
        self.total += units

    def finished(self, units: float, what: str, seconds: float) -> None:
        self.done += units
        elapsed = time.time() - self.start
        left = max(0.0, self.total - self.done)
        eta = elapsed / self.done * left if self.done > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        print(
            f"{self.prefix} {what}: {seconds:.0f} s | elapsed {_clock(elapsed)}, {pct:.0f} % done, "
            f"about {_clock(eta)} left",
            flush=True,
        )


class Runner:
    """Runs ``python <script> args`` from the repository root; output goes to ``log`` (or the terminal)."""

    def __init__(self, log: Path, *, verbose: bool = False, progress: Progress | None = None) -> None:
        self.log = Path(log)
        self.verbose = verbose
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def __call__(
        self, script: str | os.PathLike, *args: str | os.PathLike, what: str, units: float = 1.0
    ) -> float:
        """Runs one entry point; returns its wall time. Raises :class:`StepFailed` on a non-zero exit."""
        if not (REPO / script).is_file():
            raise StepFailed(
                f"step '{what}' runs {script} of a Nightcrawler git checkout, but {REPO / script} does not "
                "exist: the installed package ships no tools/ or experiment scripts; run this from a clone of "
                "the repository (pip install -e .)",
                EXIT_CONFIG,
            )
        cmd = [sys.executable, str(REPO / script), *map(str, args)]
        t0 = time.time()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.run(
                cmd,
                cwd=REPO,
                stdout=None if self.verbose else log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        seconds = time.time() - t0
        if proc.returncode != 0:
            reason = _last_error_line(self.log) if not self.verbose else None
            raise StepFailed(
                f"step failed ({what}, exit {proc.returncode})"
                + (f": {reason.removeprefix('error: ')}" if reason else "")
                + f"; see {self.log} for its output",
                proc.returncode,
            )
        self.seconds[what] = seconds
        if self.progress is not None:
            self.progress.finished(units, what, seconds)
        return seconds


def overrides(mapping: dict) -> list[str]:
    """``{"SOLVER.MAX_EPOCH": 3, ...}`` (nested dicts allowed) -> ``["SOLVER.MAX_EPOCH", "3", ...]``."""
    out: list[str] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out.extend([prefix, value if isinstance(value, str) else repr(value)])

    walk("", mapping)
    return out


def flat(items: Iterable) -> list[str]:
    return [str(x) for x in items]
