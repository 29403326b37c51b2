"""Time forward and forward+backward passes of the models, per attention kernel and precision.

    python tools/benchmark_models.py --models uniformer_tiny mvit_tiny sf_tiny --device cpu
    python tools/benchmark_models.py --models uniformer_b32 mvit_b32 sf_r101 --device cuda --batch 4

``--models`` takes names of ``configs/models/*.yaml`` or config paths. Every combination of ``--attention``
(``sdpa``: fused ``scaled_dot_product_attention``; ``explicit``: softmax(QK^T)V as the original; SlowFast has
no attention and runs once), ``--precision`` (``fp32``; ``bf16``, ``fp16`` autocast) and ``--modes`` (``fwd``:
eval mode under no_grad; ``fwdbwd``: train mode, forward, sum of outputs, backward) is timed. Reported: the
best and the median wall time per iteration after ``--warmup`` untimed iterations (the best is the robust
figure on a shared machine) and, on CUDA, the peak memory of the timed iterations. TF32 stays off, so fp32
means fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from nightcrawler.config import load_config
from nightcrawler.models.build import build_model
from nightcrawler.models.layers import explicit_attention
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.distributed import AMP_DTYPES

REPO_ROOT = Path(__file__).resolve().parents[1]
ATTENTION_MODELS = {"Uniformer", "MViT"}


def resolve_config(name: str) -> Path:
    """A config path, or the name of a file in ``configs/models``."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = REPO_ROOT / "configs" / "models" / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"no config {name!r}: neither a file nor configs/models/{name}.yaml")


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast on ``device`` for ``precision`` ``"bf16"`` or ``"fp16"``; no autocast (fp32) otherwise."""
    dtype = AMP_DTYPES.get(precision)  # fp32: None
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def time_iterations(step: Callable[[], object], device: torch.device, *, iters: int, warmup: int) -> dict:
    """Runs ``step`` ``warmup`` times untimed, then ``iters`` times timed (synchronised after each).

    Returns the best and median seconds per iteration and, on CUDA, the peak memory allocated during the timed
    iterations in GiB (``peak_gib``; None on the CPU)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"best_seconds": min(times), "median_seconds": statistics.median(times), "peak_gib": peak}


def time_model(
    model: nn.Module,
    x: torch.Tensor,
    *,
    mode: str,
    precision: str,
    explicit: bool,
    iters: int,
    warmup: int,
) -> dict:
    """Best and median seconds per iteration (and CUDA peak memory) of one configuration."""
    device = x.device
    autocast = autocast_context(device, precision)
    model.train(mode == "fwdbwd")

    def step() -> None:
        with explicit_attention(explicit), autocast:
            if mode == "fwd":
                with torch.no_grad():
                    model(x)
            else:
                model(x).float().sum().backward()
        if mode == "fwdbwd":
            model.zero_grad(set_to_none=True)

    return time_iterations(step, device, iters=iters, warmup=warmup)


def benchmark(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = device.type == "cuda"
    rows = []
    for name in args.models:
        cfg = load_config(str(resolve_config(name)), ["NUM_GPUS", 0])
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        crop = cfg.DATA.TRAIN_CROP_SIZE
        x = torch.randn(args.batch, 3, cfg.DATA.NUM_FRAMES, crop, crop, device=device)
        kernels = args.attention if cfg.MODEL.MODEL_NAME in ATTENTION_MODELS else ["-"]
        for attention in kernels:
            for precision in args.precision:
                for mode in args.modes:
                    result = time_model(
                        model,
                        x,
                        mode=mode,
                        precision=precision,
                        explicit=attention == "explicit",
                        iters=args.iters,
                        warmup=args.warmup,
                    )
                    row = {
                        "config": name,
                        "model": cfg.MODEL.MODEL_NAME,
                        "input": list(x.shape),
                        "device": str(device),
                        "attention": attention,
                        "precision": precision,
                        "mode": mode,
                        **result,
                    }
                    rows.append(row)
                    print(_format_row(row), flush=True)
        del model, x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _format_row(row: dict) -> str:
    peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "-"
    shape = "x".join(map(str, row["input"]))
    return (
        f"| {row['config']} | {shape} | {row['device']} | {row['attention']} | {row['precision']} | "
        f"{row['mode']} | {row['best_seconds'] * 1000:.1f} | {row['median_seconds'] * 1000:.1f} | {peak} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["uniformer_tiny", "mvit_tiny", "sf_tiny"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1, help="clips per iteration")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--attention", nargs="+", default=["sdpa", "explicit"], choices=["sdpa", "explicit"])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwdbwd"], choices=["fwd", "fwdbwd"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument(
        "--json", help="also write the results to this JSON file ({torch, threads, device, rows})"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| config | input | device | attention | precision | mode | best ms | median ms | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = benchmark(args)
    if args.json:
        from nightcrawler.utils.io import atomic_write_text

        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device}
        atomic_write_text(args.json, json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
