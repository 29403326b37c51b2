"""Parameters and GFLOPs per view of the model a config describes (fvcore's count).

    python tools/flops.py --cfg configs/models/uniformer_b32.yaml [KEY VALUE ...] [--json out.json]

One view is one clip of shape (1, C, DATA.NUM_FRAMES, DATA.TEST_CROP_SIZE, DATA.TEST_CROP_SIZE). fvcore
counts one multiply-add as one flop (so the figures are GMACs, the convention of the published numbers)
and counts convolutions, linear layers, matmuls and normalisations, not activations, softmax, additions or
pooling. Attention runs in its explicit matmul form while counting, since fvcore does not count the fused
kernel. Activation checkpointing is switched off (it does not change the result). Pretrained weights are
not loaded: the count needs only the architecture.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore.nn scripts a loss with the deprecated torch.jit.script at import time
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

from nightcrawler.config import load_config
from nightcrawler.models.build import build_model
from nightcrawler.models.layers import explicit_attention
from nightcrawler.utils.cli import run_cli


def view_shape(cfg) -> tuple[int, int, int, int, int]:
    """(1, C, T, H, W) of one test view."""
    crop = cfg.DATA.TEST_CROP_SIZE
    return (1, cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES, crop, crop)


def count_flops(model: nn.Module, shape: tuple[int, ...]) -> FlopCountAnalysis:
    """fvcore's analysis of ``model`` (put in eval mode) on one zero clip of ``shape``."""
    model.eval()
    with torch.no_grad(), explicit_attention(True):
        analysis = FlopCountAnalysis(model, (torch.zeros(shape),))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.total()  # runs the trace now, inside the explicit-attention context
    return analysis


def model_complexity(cfg) -> dict:
    """Parameters and fvcore GFLOPs per view for the model ``cfg`` describes."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.NUM_GPUS = 0
    cfg.MODEL.USE_CHECKPOINT = False
    cfg.MODEL.ACT_CHECKPOINT = False
    model = build_model(cfg)
    shape = view_shape(cfg)
    analysis = count_flops(model, shape)
    by_module = analysis.by_module()
    by_operator = analysis.by_operator()
    return {
        "model": cfg.MODEL.MODEL_NAME,
        "view": list(shape),
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": analysis.total() / 1e9,
        "by_operator": {k: v / 1e9 for k, v in by_operator.items()},
        "by_top_module": {n: by_module[n] / 1e9 for n, _ in model.named_children() if n in by_module},
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cfg", required=True, help="config file (a model base or an experiment config)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    result = model_complexity(load_config(args.cfg, args.opts))
    view = "x".join(map(str, result["view"]))
    print(f"{'model':<10} {'view':<18} {'params (M)':>11} {'GFLOPs/view':>12}")
    print(f"{result['model']:<10} {view:<18} {result['params'] / 1e6:>11.2f} {result['gflops']:>12.2f}")
    ops = ", ".join(f"{k} {v:.2f}" for k, v in sorted(result["by_operator"].items()))
    print(f"by operator (GFLOPs): {ops}")
    if args.json:
        from nightcrawler.utils.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
