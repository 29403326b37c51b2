"""Shared pieces of the training tests: a tiny generated data set (made once per session) and tiny configs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from nightcrawler.config import assert_and_infer_cfg, load_config
from nightcrawler.data.csvs import VideoRow, parse_video_list, write_video_list
from tests.conftest import REPO_ROOT

NUM_CLASSES = 3
TINY_UNIFORMER_YAML = REPO_ROOT / "configs" / "models" / "uniformer_tiny.yaml"
_DATA: dict[str, Path] = {}

# UniFormer with one block per stage, 4 frames at 32x32: a forward/backward step takes tens of ms on a CPU.
TINY_UNIFORMER = [
    *("UNIFORMER.EMBED_DIM", [8, 16, 32, 32], "UNIFORMER.DEPTH", [1, 1, 1, 1], "UNIFORMER.HEAD_DIM", 8),
    *(
        "UNIFORMER.DROP_DEPTH_RATE",
        0.0,
        "DATA.NUM_FRAMES",
        4,
        "DATA.TRAIN_CROP_SIZE",
        32,
        "DATA.TEST_CROP_SIZE",
        32,
    ),
]


def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class synthetic UG2/ARID set (2 videos per class and source, 12 frames, 48x40), made once."""
    if "root" not in _DATA:
        from nightcrawler.data.synthetic import SyntheticSpec, make_synthetic_dataset

        root = tmp_path_factory.mktemp("synthetic_ug2")
        spec = SyntheticSpec(
            seed=0, num_classes=NUM_CLASSES, videos_per_class=2, frames=12, width=48, height=40
        )
        make_synthetic_dataset(root, spec)
        _DATA["root"] = root
    return _DATA["root"]


def write_pseudo_csv(root: Path, name: str = "pseudo.csv") -> Path:
    """A pseudo-label list over the dark-train videos: label = (hidden label + 1) % C (so that it differs
    from the truth), probabilities peaked on that label and summing to 0.95 (as the shipped stage CSVs)."""
    rows = parse_video_list(root / "dark_unlabel.csv", num_classes=NUM_CLASSES, separator=",")
    out = []
    for i, row in enumerate(rows):
        label = i % NUM_CLASSES
        probs = [0.05] * NUM_CLASSES
        probs[label] = 0.95 - 0.05 * (NUM_CLASSES - 1)
        out.append(VideoRow(row.path, label, tuple(probs)))
    path = root / name
    write_video_list(path, out)
    return path


def tiny_opts(data_root: Path, output_dir: Path, *opts) -> list:
    """``KEY VALUE`` overrides of the tiny UniFormer on the synthetic set: CPU, no workers, fast settings."""
    return [
        *("NUM_GPUS", 0, "MODEL.NUM_CLASSES", NUM_CLASSES, *TINY_UNIFORMER),
        *(
            "DATA.PATH_PREFIX",
            str(data_root),
            "DATA.PATH_LABEL_SEPARATOR",
            ",",
            "DATA.DECODING_BACKEND",
            "pyav",
        ),
        *(
            "DATA.TRAIN_JITTER_SCALES",
            [32, 40],
            "DATA_LOADER.NUM_WORKERS",
            0,
            "DATA_LOADER.PIN_MEMORY",
            False,
        ),
        *("TRAIN.BATCH_SIZE", 4, "TEST.BATCH_SIZE", 6, "AUG.NUM_SAMPLE", 1, "AUG.ENABLE", False),
        *("MIXUP.ENABLE", False, "BN.USE_PRECISE_STATS", False, "BN.NUM_BATCHES_PRECISE", 2),
        *("SOLVER.OPTIMIZING_METHOD", "adamw", "SOLVER.BASE_LR", 3e-3, "SOLVER.WARMUP_START_LR", 1e-4),
        *("SOLVER.COSINE_END_LR", 1e-4, "SOLVER.WARMUP_EPOCHS", 1.0, "SOLVER.COSINE_AFTER_WARMUP", True),
        *("SOLVER.WEIGHT_DECAY", 0.0, "SOLVER.ZERO_WD_1D_PARAM", True, "SOLVER.MAX_EPOCH", 2),
        *(
            "TRAIN.EVAL_PERIOD",
            1,
            "TRAIN.CHECKPOINT_PERIOD",
            1,
            "TRAIN.SAVE_LATEST",
            True,
            "TRAIN.AUTO_RESUME",
            True,
        ),
        *(
            "TEST.NUM_ENSEMBLE_VIEWS",
            1,
            "TEST.NUM_SPATIAL_CROPS",
            1,
            "TENSORBOARD.ENABLE",
            False,
            "LOG_PERIOD",
            1,
        ),
        *("OUTPUT_DIR", str(output_dir), "RNG_SEED", 0, "LOG_MODEL_INFO", False, "TEST.ENABLE", False),
        *opts,
    ]


def tiny_cfg(data_root: Path, output_dir: Path, *opts):
    """The validated config of :func:`tiny_opts` (``opts`` override)."""
    cfg = load_config(str(TINY_UNIFORMER_YAML), tiny_opts(data_root, output_dir, *opts))
    return assert_and_infer_cfg(cfg)


def run_training(cfg, seed: int = 0):
    """Trains in this process the way the launcher does (logging, seeds), single-threaded for determinism."""
    from nightcrawler.engine.train import train
    from nightcrawler.utils.logging import setup_logging
    from nightcrawler.utils.seeding import seed_everything

    Path(cfg.OUTPUT_DIR, "checkpoints").mkdir(parents=True, exist_ok=True)
    setup_logging(cfg.OUTPUT_DIR, level=logging.INFO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(seed)
        return train(cfg)
    finally:
        torch.set_num_threads(threads)


def read_stats(output_dir: Path | str, kind: str | None = None) -> list[dict]:
    """The ``stats.jsonl`` records of a run (optionally only one ``_type``)."""
    lines = Path(output_dir, "stats.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if kind is None or r.get("_type") == kind]


def model_state(path: Path | str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model_state"]
