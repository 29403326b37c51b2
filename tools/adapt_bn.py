#!/usr/bin/env python
"""Adapt a trained checkpoint's BatchNorm statistics to dark videos, without training ("adapt BN").

    python tools/adapt_bn.py --cfg exp_adapt_bn/uniformer_b32_k600/config.yaml \
        --checkpoint out/best.pyth --output out/best_adapted.pyth --videos /data/new_dark_videos/ [KEY VALUE ...]

``--videos`` is a folder (every video file below it) or a video list (``path,label`` rows, paths relative to
``--video-root``, default the list's folder); without it the config's ``BN.SPLIT`` split is used. The clips
get the training augmentation, ``BN.GAMMA`` (-1: none, as the original) and ``BN.NUM_BATCHES_PRECISE``
batches of one training process's share of ``TRAIN.BATCH_SIZE`` videos (fvcore precise-BN, model in train
mode). The output keeps the input's content (epoch, optimiser state, cfg) with the new weights and a
``bn_adaptation`` record, written atomically. Runs in one process: CPU with NUM_GPUS 0, else GPU 0.

``TENT.ENABLE True`` then tunes the BatchNorm weights and biases by test-time entropy minimisation on the same
videos (``TENT.*`` keys, nightcrawler/engine/tent.py); the record gains a ``tent`` entry with the entropy
before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nightcrawler.config import ConfigError, assert_and_infer_cfg, load_config
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.errors import exit_code_for
from nightcrawler.utils.logging import setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", dest="cfg_file", required=True, help="the model's experiment config YAML")
    p.add_argument(
        "--checkpoint", required=True, help="weights to adapt (.pyth of a training run, any layout)"
    )
    p.add_argument("--output", required=True, help="where to write the adapted checkpoint")
    p.add_argument(
        "--videos", default=None, help="folder of dark videos, or a video list (default: BN.SPLIT)"
    )
    p.add_argument("--video-root", default=None, help="folder the --videos list's paths are relative to")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    cfg = assert_and_infer_cfg(load_config(args.cfg_file, args.opts))
    setup_logging(None)
    from nightcrawler.engine.bn_adapt import adapt_checkpoint

    try:
        record = adapt_checkpoint(
            cfg, args.checkpoint, args.output, videos=args.videos, video_root=args.video_root
        )
    except ValueError as exc:
        if exit_code_for(exc) is not None:  # ConfigError, CsvFormatError ...: their own code
            raise
        # e.g. --video_root holding no video, too few batches for BN.NUM_BATCHES_PRECISE: a set-up error
        raise ConfigError(str(exc)) from exc
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
