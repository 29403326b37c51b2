"""Runs the project's entry points (``tools/*.py``, the stage and vote scripts) as child processes, with a log and
a progress line per step (elapsed time and an estimate of what is left).

Two ways to start a step, same isolation (each step is its own process, its exit code decides):

* ``subprocess``: ``python script args``, a fresh interpreter that imports torch again (about 3 s on 2 cores);
* ``fork`` (default): a launcher started once with torch and the package imported (:mod:`.zygote`) forks a child
  per step, which runs the script as ``__main__`` with the same ``sys.argv``, working folder, environment and
  output.

``NIGHTCRAWLER_LAUNCH`` (``fork`` / ``subprocess``) overrides the default; platforms without ``fork`` use
``subprocess``.
"""

from __future__ import annotations

import json
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


LAUNCH_MODES = ("fork", "subprocess")


def default_launch() -> str:
    """``NIGHTCRAWLER_LAUNCH`` if set, else ``fork`` where the platform has it."""
    mode = os.environ.get("NIGHTCRAWLER_LAUNCH", "").strip().lower()
    if mode:
        if mode not in LAUNCH_MODES:
            raise StepFailed(
                f"NIGHTCRAWLER_LAUNCH must be one of {', '.join(LAUNCH_MODES)}, got {mode!r}", EXIT_CONFIG
            )
        return mode
    return "fork" if hasattr(os, "fork") else "subprocess"


class _Launcher:
    """The warm launcher process (:mod:`nightcrawler.method.zygote`) and its two pipes."""

    def __init__(self, output: Path | None) -> None:
        """``output``: where the launcher's own messages (import warnings) go; None: the terminal."""
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        with open(os.devnull if output is None else output, "a", encoding="utf-8") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nightcrawler.method.zygote", str(req_r), str(rep_w)],
                pass_fds=(req_r, rep_w),
                cwd=REPO,
                stdout=None if output is None else out,
                stderr=None if output is None else subprocess.STDOUT,
            )
        os.close(req_r)
        os.close(rep_w)
        self._requests = os.fdopen(self._req_w, "w")
        self._replies = os.fdopen(self._rep_r, "r")

    def run(self, script: Path, args: list[str], env: dict, log: Path | None) -> int:
        request = {"script": str(script), "args": args, "cwd": str(REPO), "env": env}
        request["log"] = None if log is None else str(log)
        try:
            self._requests.write(json.dumps(request) + "\n")
            self._requests.flush()
        except BrokenPipeError:
            raise StepFailed(
                f"the step launcher ended (exit {self.proc.poll()}) before running {script}"
            ) from None
        reply = self._replies.readline()
        if not reply:
            raise StepFailed(f"the step launcher ended (exit {self.proc.wait()}) while running {script}")
        return int(json.loads(reply)["exit"])

    def close(self) -> None:
        self._requests.close()
        self._replies.close()
        self.proc.wait()


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

    def __init__(
        self, log: Path, *, verbose: bool = False, progress: Progress | None = None, launch: str | None = None
    ) -> None:
        self.log = Path(log)
        self.verbose = verbose
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.launch = launch or default_launch()
        if self.launch not in LAUNCH_MODES:
            raise ValueError(f"launch must be one of {LAUNCH_MODES}, got {self.launch!r}")
        self._launcher: _Launcher | None = None

    def _fork(self, script: Path, args: list[str], env: dict) -> int:
        """Runs the step in a child of the warm launcher (started on first use); returns its exit code."""
        if self._launcher is None or self._launcher.proc.poll() is not None:
            self._launcher = _Launcher(None if self.verbose else self.log)
        return self._launcher.run(script, args, env, None if self.verbose else self.log)

    def close(self) -> None:
        """Ends the warm launcher (also done when the runner is garbage-collected or the program exits)."""
        if self._launcher is not None:
            self._launcher.close()
            self._launcher = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

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
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        t0 = time.time()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            if self.launch == "fork":
                returncode = self._fork(REPO / script, cmd[2:], env)
            else:
                returncode = subprocess.run(
                    cmd, cwd=REPO, stdout=None if self.verbose else log, stderr=subprocess.STDOUT, env=env
                ).returncode
        seconds = time.time() - t0
        if returncode != 0:
            reason = _last_error_line(self.log) if not self.verbose else None
            raise StepFailed(
                f"step failed ({what}, exit {returncode})"
                + (f": {reason.removeprefix('error: ')}" if reason else "")
                + f"; see {self.log} for its output",
                returncode,
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
