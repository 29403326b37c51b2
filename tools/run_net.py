#!/usr/bin/env python
"""The one launcher: training (TRAIN.ENABLE), then testing (TEST.ENABLE), on CPU, GPUs or several machines.

python tools/run_net.py --cfg exp_adapt_bn/uniformer_b32_k600/config.yaml NUM_GPUS 4 DATA.PATH_PREFIX /data/ug2
"""

from __future__ import annotations

import argparse
import os
import sys

from nightcrawler.config import assert_and_infer_cfg, check_input_paths, load_config
from nightcrawler.engine.launch import distributed_selftest, launch_job
from nightcrawler.utils.cli import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override config keys, e.g. NUM_GPUS 0 SOLVER.MAX_EPOCH 2.",
    )
    p.add_argument("--cfg", dest="cfg_file", required=True, help="experiment config YAML")
    p.add_argument(
        "--init_method",
        default=None,
        help="rendezvous for multi-machine runs, e.g. tcp://host:port (local runs pick a free port themselves)",
    )
    p.add_argument("--num_shards", type=int, default=None, help="machines in the job (overrides NUM_SHARDS)")
    p.add_argument("--shard_id", type=int, default=None, help="this machine's index (overrides SHARD_ID)")
    p.add_argument(
        "--self-test",
        action="store_true",
        help="only check the distributed set-up (all-reduce across every process) and exit",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    cfg = load_config(args.cfg_file, args.opts)
    if args.num_shards is not None:
        cfg.NUM_SHARDS = args.num_shards
    if args.shard_id is not None:
        cfg.SHARD_ID = args.shard_id
    assert_and_infer_cfg(cfg)
    check_input_paths(cfg)
    os.makedirs(os.path.join(cfg.OUTPUT_DIR, "checkpoints"), exist_ok=True)
    if args.self_test:
        launch_job(cfg, args.init_method, distributed_selftest)
        return 0
    if cfg.TRAIN.ENABLE:
        from nightcrawler.engine.train import train

        launch_job(cfg, args.init_method, train)
    if cfg.TEST.ENABLE:
        from nightcrawler.engine.test import test

        launch_job(cfg, args.init_method, test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
