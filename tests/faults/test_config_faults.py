"""Fault injection: bad configs fail at load / ``assert_and_infer_cfg`` / launcher path-check time, naming the key."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from nightcrawler.config import ConfigError, assert_and_infer_cfg, check_input_paths, load_config
from nightcrawler.utils.errors import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[2]

CPU = ["NUM_GPUS", "0", "NUM_CPU_PROCESSES", "1"]

# (override list, key the message must name); wrong types fail in load_config itself
WRONG_TYPES = [
    (["SOLVER.BASE_LR", "abc"], "SOLVER.BASE_LR"),
    (["TRAIN.BATCH_SIZE", "1.5"], "TRAIN.BATCH_SIZE"),
    (["SOLVER.MAX_EPOCH", "[1, 2]"], "SOLVER.MAX_EPOCH"),
    (["DATA.NUM_FRAMES", "eight"], "DATA.NUM_FRAMES"),
    (["DATA.TRAIN_JITTER_SCALES", "256"], "DATA.TRAIN_JITTER_SCALES"),
    (["TRAIN.ENABLE", "maybe"], "TRAIN.ENABLE"),
    (["DATA.MEAN", "['a', 'b', 'c']"], "DATA.MEAN"),
]

# consistent types, impossible values or combinations: fail in assert_and_infer_cfg
IMPOSSIBLE = [
    (["TEST.NUM_ENSEMBLE_VIEWS", "0"], "TEST.NUM_ENSEMBLE_VIEWS"),
    (["TEST.NUM_SPATIAL_CROPS", "2"], "TEST.NUM_SPATIAL_CROPS"),
    (["NUM_CPU_PROCESSES", "2", "TRAIN.BATCH_SIZE", "3"], "TRAIN.BATCH_SIZE"),
    (["TEST.BATCH_SIZE", "0"], "TEST.BATCH_SIZE"),
    (["DATA.TRAIN_CROP_SIZE", "400"], "DATA.TRAIN_CROP_SIZE"),
    (["DATA.TRAIN_CROP_SIZE", "0"], "DATA.TRAIN_CROP_SIZE"),
    (["DATA.TRAIN_JITTER_SCALES", "[320, 256]"], "DATA.TRAIN_JITTER_SCALES"),
    (["MODEL.MODEL_NAME", "SF", "DATA.NUM_FRAMES", "6"], "NUM_FRAMES"),
    (["DATA.NUM_FRAMES", "0"], "DATA.NUM_FRAMES"),
    (["SOLVER.MAX_EPOCH", "-1"], "SOLVER.MAX_EPOCH"),
    (["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR"),
    (["SOLVER.WARMUP_EPOCHS", "-2"], "SOLVER.WARMUP_EPOCHS"),
    (["MODEL.NUM_CLASSES", "0"], "MODEL.NUM_CLASSES"),
    (
        ["SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "2.0", "SOLVER.COSINE_AFTER_WARMUP", "True"],
        "WARMUP_EPOCHS",
    ),
    (["TEST.EXTRA_SETTINGS", "['3by1']"], "TEST.EXTRA_SETTINGS"),
    (["TEST.EXTRA_SETTINGS", "['0x1']"], "TEST.EXTRA_SETTINGS"),
    (["ENHANCE.TEST", "gamma:valu=2"], "ENHANCE.TEST"),
    (["ENHANCE.TRAIN_DARK", "not_a_method"], "ENHANCE.TRAIN_DARK"),
    (["TEST.DATA_SELECT", "nope"], "TEST.DATA_SELECT"),
    (["DATA_LOADER.NUM_WORKERS", "-2"], "DATA_LOADER.NUM_WORKERS"),
]

# paths that must exist when set (empty: unused); checked by the launcher (check_input_paths)
MISSING_PATHS = [
    "DATA.PATH_PREFIX",
    "TRAIN.CHECKPOINT_FILE_PATH",
    "TEST.CHECKPOINT_FILE_PATH",
    "DATA.PSEUDO_CSV",
]


@pytest.mark.parametrize("opts,key", WRONG_TYPES, ids=[k for _, k in WRONG_TYPES])
def test_wrong_types_fail_at_load_naming_the_key(opts, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, CPU + opts)
    assert key in str(err.value)


@pytest.mark.parametrize("opts,key", IMPOSSIBLE, ids=[" ".join(o) for o, _ in IMPOSSIBLE])
def test_impossible_values_fail_in_assert_and_infer_cfg_naming_the_key(opts, key):
    cfg = load_config(None, CPU + ["TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4"] + opts)
    with pytest.raises(ConfigError) as err:
        assert_and_infer_cfg(cfg)
    assert key in str(err.value)


def test_the_defaults_on_cpu_pass():
    assert_and_infer_cfg(load_config(None, CPU + ["TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4"]))


@pytest.mark.parametrize("key", MISSING_PATHS)
def test_missing_paths_fail_naming_key_and_path(tmp_path, key):
    missing = str(tmp_path / "no_such_thing")
    opts = CPU + ["TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4", key, missing]
    if key == "TEST.CHECKPOINT_FILE_PATH":  # checked for test-only runs (training may write it)
        opts += ["TRAIN.ENABLE", "False"]
    if key == "DATA.PSEUDO_CSV":  # relative to DATA.PATH_PREFIX, read by the train_pseudo_label split
        opts += ["DATA.PATH_PREFIX", str(tmp_path), "DATA.PSEUDO_CSV", "no_such_thing.csv"]
        missing = "no_such_thing.csv"
    cfg = assert_and_infer_cfg(load_config(None, opts))  # the config itself is consistent
    with pytest.raises(ConfigError) as err:
        check_input_paths(cfg)
    assert key in str(err.value) and missing in str(err.value)


@pytest.mark.parametrize("key", MISSING_PATHS)
def test_existing_paths_pass(tmp_path, key):
    (tmp_path / "ckpt.pyth").write_bytes(b"x")
    (tmp_path / "pseudo.csv").write_text("a.mp4,1\n")
    value = {
        "TRAIN.CHECKPOINT_FILE_PATH": str(tmp_path / "ckpt.pyth"),
        "TEST.CHECKPOINT_FILE_PATH": str(tmp_path / "ckpt.pyth"),
        "DATA.PSEUDO_CSV": "pseudo.csv",
    }.get(key, str(tmp_path))
    opts = CPU + [
        "TRAIN.BATCH_SIZE",
        "4",
        "TEST.BATCH_SIZE",
        "4",
        "DATA.PATH_PREFIX",
        str(tmp_path),
        key,
        value,
    ]
    check_input_paths(assert_and_infer_cfg(load_config(None, opts)))


def test_resuming_needs_no_initialisation_file(tmp_path):
    """With TRAIN.AUTO_RESUME and a checkpoint in OUTPUT_DIR the init file is never read, so it may be gone."""
    opts = CPU + ["TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4", "TEST.ENABLE", "False", "DATA.PATH_PREFIX"]
    opts += [str(tmp_path), "OUTPUT_DIR", str(tmp_path / "run"), "TRAIN.AUTO_RESUME", "True"]
    opts += ["TRAIN.CHECKPOINT_FILE_PATH", str(tmp_path / "deleted_init.pyth")]
    cfg = assert_and_infer_cfg(load_config(None, opts))
    with pytest.raises(ConfigError, match="TRAIN.CHECKPOINT_FILE_PATH"):
        check_input_paths(cfg)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "checkpoint_epoch_00001.pyth").write_bytes(b"x")
    check_input_paths(cfg)


def _run_net():
    spec = importlib.util.spec_from_file_location("run_net_under_test", REPO / "tools" / "run_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN_NET_FAULTS = [
    (["SOLVER.BASE_LR", "abc"], "SOLVER.BASE_LR"),
    (["TEST.NUM_ENSEMBLE_VIEWS", "0"], "TEST.NUM_ENSEMBLE_VIEWS"),
    (["MODEL.MODEL_NAME", "SF", "DATA.NUM_FRAMES", "6"], "NUM_FRAMES"),
    (["TRAIN.CHECKPOINT_FILE_PATH", "/no/such/weights.pyth"], "TRAIN.CHECKPOINT_FILE_PATH"),
]


@pytest.mark.parametrize("opts,key", RUN_NET_FAULTS, ids=[k for _, k in RUN_NET_FAULTS])
def test_run_net_stops_before_any_work(tmp_path, capsys, opts, key):
    """tools/run_net.py in-process: exit 2, one paragraph naming the key, and OUTPUT_DIR never created."""
    out = tmp_path / "out"
    argv = ["--cfg", str(REPO / "configs" / "models" / "uniformer_tiny.yaml"), *CPU, "OUTPUT_DIR", str(out)]
    assert _run_net().main(argv + opts) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
    assert not out.exists()
