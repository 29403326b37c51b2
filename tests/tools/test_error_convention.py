"""The entry-point error convention (nightcrawler.utils.cli / errors): one paragraph, a documented exit code,
the traceback only with --debug or NIGHTCRAWLER_DEBUG=1 (always for bugs); also across spawned workers."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nightcrawler.config import ConfigError
from nightcrawler.data.csvs import CsvFormatError
from nightcrawler.data.decoders import VideoDecodeError
from nightcrawler.engine.launch import first_user_error, save_user_error
from nightcrawler.models.checkpoint import CheckpointError
from nightcrawler.pseudo.io import PseudoLabelError
from nightcrawler.utils.cli import run_cli, split_debug
from nightcrawler.utils.errors import (
    DEBUG_ENV,
    EXIT_CHECKPOINT,
    EXIT_CONFIG,
    EXIT_DATA,
    EXIT_DIVERGED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT,
    OutputWriteError,
    TrainingDivergedError,
)
from tests.conftest import REPO_ROOT
from tests.engine.train_helpers import TINY_UNIFORMER_YAML, synthetic_root, tiny_opts

USER_ERRORS = [
    (ConfigError("unknown config key NO.SUCH_KEY"), EXIT_CONFIG),
    (VideoDecodeError("/videos/a.mp4", "file not found"), EXIT_DATA),
    (CsvFormatError("list.csv line 3: no label"), EXIT_DATA),
    (PseudoLabelError("PKL not found: /x/y.pkl"), EXIT_DATA),
    (CheckpointError("/out/checkpoints/checkpoint_latest.pyth: model weights do not match"), EXIT_CHECKPOINT),
    (OutputWriteError("/ro/out.csv", "read-only file system"), EXIT_OUTPUT),
    (TrainingDivergedError("loss is nan at epoch 2, iteration 5"), EXIT_DIVERGED),
]


def _raiser(exc: BaseException):
    def main(argv: list[str]) -> int:
        raise exc

    return main


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


@pytest.mark.parametrize(
    ("exc", "code"), USER_ERRORS, ids=lambda v: type(v).__name__ if not isinstance(v, int) else ""
)
def test_user_error_is_one_paragraph_and_its_code(exc, code, capsys):
    assert run_cli(_raiser(exc), []) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    first, *rest = err.splitlines()
    assert first == f"error: {exc}"
    assert rest == ["(run again with --debug, or NIGHTCRAWLER_DEBUG=1, for the traceback)"]


@pytest.mark.parametrize(("exc", "code"), USER_ERRORS[:2] + USER_ERRORS[-1:])
def test_user_errors_pickle_with_class_and_message(exc, code):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc)


def test_debug_flag_anywhere_adds_the_traceback_and_is_removed(capsys):
    seen = []

    def main(argv):
        seen.append(argv)
        raise ConfigError("bad key X")

    assert run_cli(main, ["--cfg", "c.yaml", "--debug", "A", "1"]) == EXIT_CONFIG
    assert seen == [["--cfg", "c.yaml", "A", "1"]]
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError: bad key X" in err
    assert err.rstrip().endswith("error: bad key X")


def test_debug_env_adds_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert run_cli(_raiser(VideoDecodeError("/v.mp4", "file not found")), []) == EXIT_DATA
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("error: ") and "/v.mp4" in err.splitlines()[-1]
    monkeypatch.setenv(DEBUG_ENV, "0")
    assert split_debug(["x"]) == (["x"], False)


def test_internal_error_shows_the_traceback_and_returns_1(capsys):
    assert run_cli(_raiser(KeyError("oops")), []) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'oops'" in err
    assert "bug" in err.splitlines()[-1]


def test_interrupt_returns_130_and_success_codes_pass_through(capsys):
    assert run_cli(_raiser(KeyboardInterrupt()), []) == EXIT_INTERRUPTED
    assert run_cli(lambda argv: None, []) == 0
    assert run_cli(lambda argv: 7, []) == 7
    with pytest.raises(SystemExit) as info:  # argparse's usage errors keep their own exit 2
        run_cli(lambda argv: __import__("argparse").ArgumentParser().parse_args(argv), ["--nope"])
    assert info.value.code == 2


def test_arguments_after_double_dash_are_not_taken(monkeypatch):
    assert split_debug(["a", "--", "--debug"]) == (["a", "--", "--debug"], False)


def test_saved_worker_error_comes_back_with_class_and_message(tmp_path):
    assert first_user_error(str(tmp_path)) is None
    save_user_error(str(tmp_path), 1, VideoDecodeError("/v/b.mp4", "none of its frames decodes"))
    back = first_user_error(str(tmp_path))
    assert isinstance(back, VideoDecodeError) and "/v/b.mp4" in str(back)


def test_in_process_entry_points_follow_the_convention(tmp_path, capsys):
    run_net, generate_csv = _tool("run_net"), _tool("generate_csv")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path}\n")
    assert run_net.main(["--cfg", str(cfg), "NO.SUCH_KEY", "1"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "NO.SUCH_KEY" in err.splitlines()[0] and "Traceback" not in err
    assert (
        generate_csv.main(["--cfg", str(tmp_path / "missing.yaml"), "--prefix", str(tmp_path)]) == EXIT_CONFIG
    )
    assert "missing.yaml" in capsys.readouterr().err


# ------------------------------------------------------------------------ real runs (subprocesses)


def _run(script: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _assert_paragraph(res: subprocess.CompletedProcess, code: int, *names: str) -> None:
    assert res.returncode == code, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = res.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, res.stderr[-3000:]
    # the paragraph: the error line (and the message's own continuation lines), then the hint, then nothing
    assert lines[-1].startswith("(run again with --debug"), res.stderr[-3000:]
    paragraph = "\n".join(lines[starts[0] : -1])
    for name in names:
        assert name in paragraph, paragraph


def _foreign_checkpoint(out: Path) -> Path:
    path = out / "checkpoints" / "checkpoint_latest.pyth"
    path.parent.mkdir(parents=True)
    torch.save({"model_state": {"other_net.fc.weight": torch.zeros(2, 2)}, "epoch": 0}, path)
    return path


def _tool(name: str):
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(REPO_ROOT / "tools"))


def test_resuming_a_checkpoint_of_another_model_exits_4(tmp_path_factory, tmp_path, capsys):
    # NUM_CPU_PROCESSES 1: the job runs in this process (run_net.main called directly)
    root = synthetic_root(tmp_path_factory)
    out = tmp_path / "out"
    ckpt = _foreign_checkpoint(out)
    opts = tiny_opts(root, out, "NUM_CPU_PROCESSES", 1, "CPU_THREADS", 1)
    assert _tool("run_net").main(["--cfg", str(TINY_UNIFORMER_YAML), *map(str, opts)]) == EXIT_CHECKPOINT
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(ckpt) in err[err.index("error: ") :]


def test_checkpoint_error_in_a_spawned_worker_reaches_the_parent(tmp_path_factory, tmp_path):
    # two gloo workers: each raises CheckpointError; the parent re-raises it, same paragraph and code
    root = synthetic_root(tmp_path_factory)
    out = tmp_path / "out"
    ckpt = _foreign_checkpoint(out)
    opts = tiny_opts(root, out, "NUM_CPU_PROCESSES", 2, "CPU_THREADS", 1)
    res = _run("tools/run_net.py", "--cfg", TINY_UNIFORMER_YAML, *opts)
    _assert_paragraph(res, EXIT_CHECKPOINT, str(ckpt))


def test_missing_test_video_exits_3_naming_it(tmp_path_factory, tmp_path):
    root = synthetic_root(tmp_path_factory)
    rows = (root / "test.csv").read_text().splitlines()
    broken = tmp_path / "broken_test.csv"
    broken.write_text("\n".join([f"no_such_video.mp4,{rows[0].rsplit(',', 1)[-1]}", *rows[1:]]) + "\n")
    opts = tiny_opts(
        root,
        tmp_path / "out",
        "TRAIN.ENABLE",
        False,
        "TEST.ENABLE",
        True,
        "TEST.DATA_SELECT",
        "test",
        "DATA.CSV_TEST",
        broken,
    )
    res = _run("tools/run_net.py", "--cfg", TINY_UNIFORMER_YAML, *opts)
    _assert_paragraph(res, EXIT_DATA, "no_such_video.mp4")


def test_unknown_config_key_exits_2_with_one_paragraph(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path}\n")
    _assert_paragraph(_run("tools/run_net.py", "--cfg", cfg, "NO.SUCH_KEY", "1"), EXIT_CONFIG, "NO.SUCH_KEY")


def test_pseudo_stage_with_a_missing_pkl_exits_3_naming_it(tmp_path):
    res = _run("gen_pseudo_tools/generate_pseudo_label_stage1.py", "--root", tmp_path)
    _assert_paragraph(res, EXIT_DATA, str(tmp_path))
    assert ".pkl" in res.stderr
