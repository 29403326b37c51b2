"""Consistency checks and derived values, applied once after loading (the original's ``assert_and_infer_cfg``)."""

from __future__ import annotations

import os

from yacs.config import CfgNode

from nightcrawler.config.loading import ConfigError

TRAIN_SPLITS = ("train_label", "train_unlabel", "train_pseudo_label")
TEST_SPLITS = ("val_dry", "arid", "dark_unlabel", "total_unlabel", "test")
DATASETS = ("ug2_sparse", "ug2")


def _choice(value, allowed, key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(str, allowed))}")


def processes_per_machine(cfg: CfgNode) -> int:
    """Processes launched on one machine: one per GPU, or NUM_CPU_PROCESSES on the CPU."""
    return cfg.NUM_GPUS if cfg.NUM_GPUS > 0 else max(1, cfg.NUM_CPU_PROCESSES)


AUTO_WORKERS_MAX = 8  # the fastest of 0 / 2 / 4 / 8 measured on a 16-core GPU node (docs/PERFORMANCE.md)


def machine_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(cfg: CfgNode, local_processes: int | None = None) -> int:
    """DataLoader worker processes per loader: DATA_LOADER.NUM_WORKERS, or for -1 (auto) the cores left to this
    process besides its own (``local_processes`` per machine, default from the config), at most
    :data:`AUTO_WORKERS_MAX`: 1 on a 2-core CPU, 8 per GPU on a 16-core one-GPU node."""
    if cfg.DATA_LOADER.NUM_WORKERS >= 0:
        return cfg.DATA_LOADER.NUM_WORKERS
    procs = local_processes or processes_per_machine(cfg)
    return max(0, min(AUTO_WORKERS_MAX, machine_cores() // procs - 1))


def assert_and_infer_cfg(cfg: CfgNode) -> CfgNode:
    """Validates cross-key constraints and applies derived settings in place; returns ``cfg``."""
    if cfg.NUM_GPUS < 0 or cfg.NUM_SHARDS < 1 or not 0 <= cfg.SHARD_ID < cfg.NUM_SHARDS:
        raise ConfigError(
            f"NUM_GPUS={cfg.NUM_GPUS}, NUM_SHARDS={cfg.NUM_SHARDS}, SHARD_ID={cfg.SHARD_ID}: need NUM_GPUS >= 0, "
            "NUM_SHARDS >= 1 and 0 <= SHARD_ID < NUM_SHARDS"
        )
    procs = processes_per_machine(cfg)
    for key in ("TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE"):
        section, name = key.split(".")
        value = cfg[section][name]
        if value <= 0 or value % procs:
            raise ConfigError(
                f"{key} = {value} must be a positive multiple of the processes per machine ({procs}: "
                f"{'NUM_GPUS' if cfg.NUM_GPUS else 'NUM_CPU_PROCESSES'})"
            )
    _choice(cfg.TRAIN.DATASET, DATASETS, "TRAIN.DATASET")
    _choice(cfg.TEST.DATASET, DATASETS, "TEST.DATASET")
    _choice(cfg.TEST.DATA_SELECT, TEST_SPLITS + TRAIN_SPLITS, "TEST.DATA_SELECT")
    for split in cfg.TEST.ALSO_SPLITS:
        _choice(split, TEST_SPLITS, "TEST.ALSO_SPLITS entry")
    for split in cfg.TRAIN.EVAL_SPLITS:
        _choice(split, TEST_SPLITS, "TRAIN.EVAL_SPLITS entry")
    _choice(cfg.BN.SPLIT, TRAIN_SPLITS + TEST_SPLITS, "BN.SPLIT")
    _choice(cfg.DATA.ENSEMBLE_METHOD, ("sum", "max", "mean"), "DATA.ENSEMBLE_METHOD")
    _choice(cfg.SOLVER.OPTIMIZING_METHOD, ("sgd", "adamw"), "SOLVER.OPTIMIZING_METHOD")
    _choice(cfg.SOLVER.LR_POLICY, ("cosine", "steps_with_relative_lrs"), "SOLVER.LR_POLICY")
    _choice(cfg.TRAIN.PSEUDO_EPOCH_LENGTH, ("shorter", "pseudo"), "TRAIN.PSEUDO_EPOCH_LENGTH")
    _choice(cfg.TRAIN.MIXED_PRECISION, ("fp16", "bf16", "none"), "TRAIN.MIXED_PRECISION")
    _choice(cfg.TEST.MIXED_PRECISION, ("fp16", "bf16", "none"), "TEST.MIXED_PRECISION")
    _check_frame_control(cfg)
    from nightcrawler.models.speed import COMPILE_MODES

    _choice(cfg.MODEL.COMPILE_MODE, COMPILE_MODES, "MODEL.COMPILE_MODE")
    if cfg.TRAIN.CHECKPOINT_TYPE != "pytorch" or cfg.TEST.CHECKPOINT_TYPE != "pytorch":
        raise ConfigError("TRAIN/TEST.CHECKPOINT_TYPE: only 'pytorch' checkpoints are supported")
    if cfg.AUG.NUM_SAMPLE < 1:
        raise ConfigError(f"AUG.NUM_SAMPLE = {cfg.AUG.NUM_SAMPLE} must be >= 1")
    if cfg.TEST.NUM_ENSEMBLE_VIEWS < 1 or cfg.TEST.NUM_SPATIAL_CROPS not in (1, 3):
        raise ConfigError(
            f"TEST.NUM_ENSEMBLE_VIEWS = {cfg.TEST.NUM_ENSEMBLE_VIEWS} must be >= 1 and TEST.NUM_SPATIAL_CROPS = "
            f"{cfg.TEST.NUM_SPATIAL_CROPS} must be 1 or 3"
        )
    _check_ranges(cfg)
    _check_tent(cfg, procs)
    # what the layers above declare: each phase's enhancement spec, the chosen model's input rules
    from nightcrawler.data.enhance import check_enhancement_keys
    from nightcrawler.models.registry import check_model_config

    try:
        check_enhancement_keys(cfg)
        check_model_config(cfg)
        _check_tta_settings(cfg)
    except (ValueError, KeyError) as exc:
        raise ConfigError(str(exc).strip("'\"")) from exc
    _check_distill(cfg)  # after the enhancement keys: it reads the training phase's enhancement
    return cfg


def _check_frame_control(cfg: CfgNode) -> None:
    from nightcrawler.data.sampling import FRAME_CONTROLS

    if cfg.TEST.FRAME_CONTROL not in FRAME_CONTROLS:
        allowed = ", ".join(repr(c) for c in FRAME_CONTROLS)
        raise ConfigError(
            f"TEST.FRAME_CONTROL = {cfg.TEST.FRAME_CONTROL!r} is not one of {allowed} ('': frames as sampled)"
        )


def _check_ranges(cfg: CfgNode) -> None:
    """Single-key bounds and the crop/scale relation: values of the right type that no run can use."""
    for key, low in (
        ("MODEL.NUM_CLASSES", 1),
        ("DATA.NUM_FRAMES", 1),
        ("DATA.SAMPLING_RATE", 1),
        ("DATA.TRAIN_CROP_SIZE", 1),
        ("DATA.TEST_CROP_SIZE", 1),
        ("SOLVER.MAX_EPOCH", 0),
        ("SOLVER.WARMUP_EPOCHS", 0),
        ("SOLVER.BASE_LR", 0),
        ("SOLVER.WEIGHT_DECAY", 0),
        ("DATA_LOADER.NUM_WORKERS", -1),
    ):
        section, name = key.split(".")
        value = cfg[section][name]
        if value < low:
            raise ConfigError(f"{key} = {value!r} must be >= {low}")
    solver = cfg.SOLVER
    if (
        solver.LR_POLICY == "cosine"
        and solver.COSINE_AFTER_WARMUP
        and solver.MAX_EPOCH <= solver.WARMUP_EPOCHS
    ):
        raise ConfigError(
            f"SOLVER.MAX_EPOCH = {solver.MAX_EPOCH} must exceed SOLVER.WARMUP_EPOCHS = {solver.WARMUP_EPOCHS} "
            "with SOLVER.COSINE_AFTER_WARMUP (the cosine would span no epochs)"
        )
    scales = cfg.DATA.TRAIN_JITTER_SCALES
    if len(scales) != 2 or not 0 < scales[0] <= scales[1]:
        raise ConfigError(f"DATA.TRAIN_JITTER_SCALES = {list(scales)} must be [min, max] with 0 < min <= max")
    # with scale jitter (no relative random-resized-crop lists) the crop is cut from the rescaled short side
    if not cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE and cfg.DATA.TRAIN_CROP_SIZE > scales[0]:
        raise ConfigError(
            f"DATA.TRAIN_CROP_SIZE = {cfg.DATA.TRAIN_CROP_SIZE} is larger than the smallest training scale "
            f"DATA.TRAIN_JITTER_SCALES[0] = {scales[0]}"
        )


TENT_OPTIMIZERS = ("sgd", "adam")
TENT_BN_MODES = ("fixed", "batch")
DISTILL_SPLITS = ("train_label", "train_pseudo_label")


def _check_tent(cfg: CfgNode, procs: int) -> None:
    """TENT.* when TENT.ENABLE (nightcrawler/engine/tent.py); nothing is checked while it is off."""
    tent = cfg.TENT
    if not tent.ENABLE:
        return
    if tent.STEPS < 1:
        raise ConfigError(f"TENT.STEPS = {tent.STEPS} must be >= 1 with TENT.ENABLE")
    if not tent.LR > 0:
        raise ConfigError(f"TENT.LR = {tent.LR} must be > 0 with TENT.ENABLE")
    if tent.BATCH_SIZE <= 0 or tent.BATCH_SIZE % procs:
        raise ConfigError(
            f"TENT.BATCH_SIZE = {tent.BATCH_SIZE} must be a positive multiple of the processes per machine "
            f"({procs})"
        )
    _choice(tent.SPLIT, TRAIN_SPLITS + TEST_SPLITS, "TENT.SPLIT")
    _choice(tent.OPTIMIZER, TENT_OPTIMIZERS, "TENT.OPTIMIZER")
    _choice(tent.BN_MODE, TENT_BN_MODES, "TENT.BN_MODE")


def _check_distill(cfg: CfgNode) -> None:
    """DISTILL.* when DISTILL.ENABLE (nightcrawler/engine/distill.py); nothing is checked while it is off."""
    from nightcrawler.data.enhance import canonical, phase_enhancement

    d = cfg.DISTILL
    if not d.ENABLE:
        return
    if not str(d.TEACHER_CHECKPOINT).strip():
        raise ConfigError(
            "DISTILL.TEACHER_CHECKPOINT is empty: DISTILL.ENABLE needs the teacher's trained weights"
        )
    if not d.TEMPERATURE > 0:
        raise ConfigError(f"DISTILL.TEMPERATURE = {d.TEMPERATURE} must be > 0")
    if not 0.0 <= d.ALPHA <= 1.0:
        raise ConfigError(f"DISTILL.ALPHA = {d.ALPHA} must lie in [0, 1]")
    if not d.SPLITS:
        raise ConfigError(
            f"DISTILL.SPLITS is empty: name the distilled batches ({', '.join(DISTILL_SPLITS)})"
        )
    for split in d.SPLITS:
        _choice(split, DISTILL_SPLITS, "DISTILL.SPLITS entry")
    try:
        canonical(d.TEACHER_ENHANCEMENT)
    except ValueError as exc:
        raise ConfigError(f"DISTILL.TEACHER_ENHANCEMENT: {exc}") from None
    if (
        "train_pseudo_label" in d.SPLITS
        and not phase_enhancement(cfg, "train", "train_pseudo_label").is_identity
    ):
        raise ConfigError(
            "ENHANCE.TRAIN_DARK (or its alias DATA.TRAIN_GAMMA) enhances the dark training clips, but with "
            "DISTILL.ENABLE the student trains on raw dark clips (the teacher gets DISTILL.TEACHER_ENHANCEMENT): "
            "set ENHANCE.TRAIN_DARK none"
        )
    if cfg.TRAIN.ENABLE and d.SPLITS == ["train_pseudo_label"] and not cfg.DATA.PSEUDO_CSV:
        raise ConfigError(
            "DISTILL.SPLITS = ['train_pseudo_label'] but DATA.PSEUDO_CSV is empty: this run has no pseudo-labelled "
            "batch to distil (add train_label to DISTILL.SPLITS or set DATA.PSEUDO_CSV)"
        )


def check_input_paths(cfg: CfgNode) -> None:
    """Raises ConfigError naming the key when a path this run will read does not exist.

    Called by the launcher before any work, not by ``assert_and_infer_cfg``: an experiment config may name
    the previous stage's checkpoint or pseudo CSV, which exist only when that stage has run. The training
    initialisation file is not needed when ``TRAIN.AUTO_RESUME`` finds a checkpoint in ``OUTPUT_DIR``; the test
    checkpoint is checked for test-only runs (training may write it).
    """
    import os

    from nightcrawler.engine.checkpointer import find_resume_checkpoint

    test_only = cfg.TEST.ENABLE and not cfg.TRAIN.ENABLE
    train_init = cfg.TRAIN.CHECKPOINT_FILE_PATH if cfg.TRAIN.ENABLE else ""
    if train_init and cfg.TRAIN.AUTO_RESUME and find_resume_checkpoint(cfg.OUTPUT_DIR) is not None:
        train_init = ""
    checks = [
        ("DATA.PATH_PREFIX", cfg.DATA.PATH_PREFIX, "folder"),
        ("TRAIN.CHECKPOINT_FILE_PATH", train_init, "file"),
        # a test-only run reads it now; after training it may be a file this run writes (best.pyth)
        ("TEST.CHECKPOINT_FILE_PATH", cfg.TEST.CHECKPOINT_FILE_PATH if test_only else "", "file"),
    ]
    if cfg.DATA.PSEUDO_CSV and cfg.TRAIN.ENABLE:
        checks.append(("DATA.PSEUDO_CSV", os.path.join(cfg.DATA.PATH_PREFIX, cfg.DATA.PSEUDO_CSV), "file"))
    if cfg.DISTILL.ENABLE and cfg.TRAIN.ENABLE:
        checks.append(("DISTILL.TEACHER_CHECKPOINT", cfg.DISTILL.TEACHER_CHECKPOINT, "file"))
        checks.append(("DISTILL.TEACHER_CFG", cfg.DISTILL.TEACHER_CFG, "file"))
    for key, path, kind in checks:
        if not path:
            continue
        exists = os.path.isdir(path) if kind == "folder" else os.path.isfile(path)
        if not exists:
            section, name = key.split(".")
            shown = cfg[section][name]
            where = f" (resolved to '{path}')" if shown != path else ""
            raise ConfigError(f"{key} = '{shown}'{where}: no such {kind}")


def _check_tta_settings(cfg: CfgNode) -> None:
    """Parses every TEST.EXTRA_SETTINGS entry now (a bad one would otherwise fail after the test pass)."""
    from nightcrawler.data.enhance import setting_enhancement
    from nightcrawler.engine.tta import parse_tta_setting

    for text in cfg.TEST.EXTRA_SETTINGS:
        parse_tta_setting(text, setting_enhancement("none"))


def apply_world_layout(cfg: CfgNode, world_size: int, local_world_size: int, rank: int) -> CfgNode:
    """Checks ``cfg`` against the process group that actually exists and records its machines in place.

    ``local_world_size`` is the number of processes on this machine (the spawned processes, ``LOCAL_WORLD_SIZE``
    under torchrun, the tasks per node under SLURM). Sets NUM_SHARDS to the number of machines
    (``world_size / local_world_size``) and SHARD_ID to this machine's index, so that BASE_LR_SCALE_NUM_SHARDS
    scales by the real machine count under torchrun too; for a launch by ``NUM_SHARDS``/``SHARD_ID`` both stay as
    they were. Raises ConfigError when the world is not whole machines, when a NUM_SHARDS other than 1 disagrees
    with it, or when TRAIN.BATCH_SIZE (split over all processes) is not a multiple of the world size, or
    TEST.BATCH_SIZE not a multiple of the processes per machine (the original's rule, with real counts).
    """
    if local_world_size < 1 or world_size < local_world_size or world_size % local_world_size:
        raise ConfigError(
            f"world size {world_size} is not a whole number of machines of {local_world_size} process(es) each"
        )
    machines = world_size // local_world_size
    if cfg.NUM_SHARDS not in (1, machines):
        raise ConfigError(
            f"NUM_SHARDS = {cfg.NUM_SHARDS} but the process group has {machines} machine(s): world size "
            f"{world_size} = {local_world_size} process(es) per machine x {machines}"
        )
    for key, divisor, what in (
        ("TRAIN.BATCH_SIZE", world_size, f"the world size ({world_size} = {machines} x {local_world_size})"),
        ("TEST.BATCH_SIZE", local_world_size, f"the processes per machine ({local_world_size})"),
    ):
        section, name = key.split(".")
        value = cfg[section][name]
        if value <= 0 or value % divisor:
            raise ConfigError(f"{key} = {value} must be a positive multiple of {what}")
    cfg.NUM_SHARDS = machines
    cfg.SHARD_ID = rank // local_world_size
    return cfg


def scaled_learning_rates(cfg: CfgNode) -> tuple[float, float, float]:
    """(BASE_LR, WARMUP_START_LR, COSINE_END_LR), multiplied by NUM_SHARDS when BASE_LR_SCALE_NUM_SHARDS.

    As the original, the rates scale with the number of machines, not with GPUs or the batch size; the
    launcher sets NUM_SHARDS to the real machine count (:func:`apply_world_layout`) before the job runs.
    """
    scale = cfg.NUM_SHARDS if cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS else 1
    return cfg.SOLVER.BASE_LR * scale, cfg.SOLVER.WARMUP_START_LR * scale, cfg.SOLVER.COSINE_END_LR * scale
