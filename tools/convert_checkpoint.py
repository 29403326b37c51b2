"""Convert any supported weight file into a clean Nightcrawler ``.pyth`` for one model configuration.

    python tools/convert_checkpoint.py --cfg configs/models/sf_r101.yaml \
        --input SlowFast-ResNet101-8x8.pth --output pretrained/sf_r101_k700.pyth [KEY VALUE ...]
    python tools/convert_checkpoint.py --cfg configs/models/mvit_b16x4.yaml \
        --input mvit_v1_b-dbeb1030.pth --output pretrained/mvit_b16x4_k400.pyth

The input may be an original / PySlowFast ``.pyth``, a UniFormer zoo file (video or 2-D ImageNet, which is
inflated), an AlphAction SlowFast file, or a torchvision MViT v1 (``mvit_v1_b``) state dict as
``torch.save(model.state_dict())`` writes it, e.g. torchvision's Kinetics-400 file (renamed to our MViT-B
16x4). The weights are loaded strictly into the model the config describes (a classifier with another class
count is left at its initialisation, seeded by RNG_SEED), and the model's full state dict is written
atomically as ``{"model_state", "epoch": -1, "cfg"}``. Use ``--allow-pickle`` only for files you trust that
hold Python objects besides tensors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from nightcrawler.config import load_config
from nightcrawler.models.build import build_model
from nightcrawler.models.checkpoint import LoadReport, load_pretrained
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.io import atomic_torch_save

logger = logging.getLogger("convert_checkpoint")


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    cfg,
    *,
    strict: bool = True,
    allow_pickle: bool = False,
) -> LoadReport:
    """Loads ``src`` into the model ``cfg`` describes and writes ``dst`` as a clean ``.pyth``."""
    cfg = cfg.clone()
    cfg.NUM_GPUS = 0
    torch.manual_seed(cfg.RNG_SEED)
    model = build_model(cfg)
    report = load_pretrained(
        model,
        src,
        num_classes=cfg.MODEL.NUM_CLASSES,
        strict=strict,
        inflate=cfg.TRAIN.CHECKPOINT_INFLATE,
        clear_name_patterns=tuple(cfg.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN),
        allow_pickle=allow_pickle,
    )
    fresh = [k for k in model.state_dict() if k not in report.loaded]
    if fresh:
        logger.info("initialised fresh (not in %s): %s", src, ", ".join(fresh))
    atomic_torch_save({"model_state": model.state_dict(), "epoch": -1, "cfg": cfg.dump()}, dst)
    return report


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cfg", required=True, help="config describing the target model")
    parser.add_argument("--input", required=True, help="weight file to convert")
    parser.add_argument("--output", required=True, help=".pyth file to write")
    parser.add_argument("--non-strict", action="store_true", help="load the matching part, log the rest")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="unpickle arbitrary objects (trusted files)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.cfg, args.opts)
    report = convert_checkpoint(
        args.input, args.output, cfg, strict=not args.non_strict, allow_pickle=args.allow_pickle
    )
    print(f"wrote {args.output}: {report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
