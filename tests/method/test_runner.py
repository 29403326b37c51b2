"""The step runner: a fork-server child per step behaves as ``python script args`` (output, exit code, working
folder, environment, sys.argv, exit handlers), and a failing step is reported with its code and last error."""

from __future__ import annotations

import os

import pytest

from nightcrawler.method import runner as runner_mod
from nightcrawler.method.runner import Runner, StepFailed

SCRIPT = """
import atexit, os, sys
from pathlib import Path
atexit.register(lambda: Path(os.environ["MARK"]).write_text("exit handler ran"))
print("argv", sys.argv[1:], "cwd", os.getcwd() == os.environ["WANT_CWD"], "path0", sys.path[0].endswith("steps"))
print("to stderr", file=sys.stderr)
if __name__ == "__main__":
    code = int(sys.argv[1])
    if code:
        print("error: the step's own message")
    sys.exit(code)
"""


@pytest.fixture()
def script(monkeypatch, tmp_path):
    """A script under a fake checkout (``REPO``), as the runner's steps are."""
    repo = tmp_path / "repo"
    (repo / "steps").mkdir(parents=True)
    (repo / "steps" / "step.py").write_text(SCRIPT)
    monkeypatch.setattr(runner_mod, "REPO", repo)
    monkeypatch.setenv("WANT_CWD", str(repo))
    return repo


@pytest.mark.parametrize("launch", ["fork", "subprocess"])
def test_a_step_runs_as_python_would(script, tmp_path, monkeypatch, launch):
    mark = tmp_path / f"mark_{launch}"
    monkeypatch.setenv("MARK", str(mark))
    log = tmp_path / "log.txt"
    run = Runner(log, launch=launch)
    run("steps/step.py", 0, "x y", what="ok step")
    run("steps/step.py", 0, what="again")  # the fork server is reused
    text = log.read_text()
    assert "argv ['0', 'x y'] cwd True path0 True" in text and "to stderr" in text
    assert mark.read_text() == "exit handler ran" and set(run.seconds) == {"ok step", "again"}
    with pytest.raises(StepFailed, match=r"step failed \(bad step, exit 3\): the step's own message") as err:
        run("steps/step.py", 3, what="bad step")
    assert err.value.exit_code == 3


def test_launch_mode_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NIGHTCRAWLER_LAUNCH", "subprocess")
    assert Runner(tmp_path / "l").launch == "subprocess"
    monkeypatch.setenv("NIGHTCRAWLER_LAUNCH", "threads")
    with pytest.raises(StepFailed, match="NIGHTCRAWLER_LAUNCH must be one of fork, subprocess"):
        Runner(tmp_path / "l")
    monkeypatch.delenv("NIGHTCRAWLER_LAUNCH")
    assert Runner(tmp_path / "l").launch == ("fork" if os.name == "posix" else "subprocess")
