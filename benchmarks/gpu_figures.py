"""The GPU figures of docs/PERFORMANCE.md in one short run: training and 3x3 test throughput, peak memory, loader.

    bash benchmarks/gpu_figures.sh [OUT.json]                      # the defaults below, under a timeout
    python benchmarks/gpu_figures.py --json gpu_figures.json       # the same without the timeout
    python benchmarks/gpu_figures.py --device cpu --tiny --json t.json   # tiny configs on the CPU (tests)

Per model (``--models``: names of ``configs/models/*.yaml`` or config paths; default ``uniformer_b32
mvit_b32 sf_r101``, 32 frames x 224x224):

* ``train``: one training step (train mode, forward, cross-entropy on random labels, backward, SGD step with
  momentum), ``--batch`` clips per step; figure: clips/s.
* ``test3x3``: the tester's 3 temporal views x 3 crops: ``--test-videos`` videos x 9 clips through the model
  in one batch (eval mode, no_grad), then the mean over each video's 9 class-probability vectors (softmax of
  the logits; MViT's eval outputs already are probabilities); figure: videos/s (and clips/s).

each in fp32 and bf16 autocast (``--precisions``; ``fp16`` adds fp16 autocast, whose training step scales the
loss with a ``GradScaler`` on CUDA as the trainer's ``TRAIN.MIXED_PRECISION fp16``), and for UniFormer and MViT
with both attention kernels (``sdpa``: fused ``scaled_dot_product_attention``; ``explicit``: softmax(QK^T)V as
the original); SlowFast has no attention (``none``). Timing, autocast and config resolution are those of
``tools/benchmark_models.py``: ``--warmup`` untimed iterations, then ``--iters`` timed ones synchronised one by
one; throughput uses the median time per iteration. ``peak_mem_gb``: ``torch.cuda.max_memory_allocated`` over
the timed iterations after ``reset_peak_memory_stats`` (weights, gradients, optimizer state and activations), in
GB (1e9 bytes). TF32 is off, so fp32 means fp32; cuDNN autotuning is on (the warm-up absorbs it). The models run
with their configs' settings (UniFormer-B32 trains with activation checkpointing in stage 3,
``MODEL.USE_CHECKPOINT``).

``loader``: the training DataLoader (``nightcrawler.data.loader.build_loader``, split ``train_label``, the
shipped recipe ``configs/experiments/ug2_common.yaml``: RandAugment, random resized crop, flip, erasing,
``AUG.NUM_SAMPLE`` 2 clips per video) over synthetic 320x240 dark videos generated into a temporary folder,
at the first model's frames and crop, ``--batch`` clips per batch, with each ``--workers`` count and each
``--pin-memory`` setting (default ``on``, ``DATA_LOADER.PIN_MEMORY``; pinning needs CUDA), each batch's clips
copied to the device (non-blocking, as the trainer); figure: clips/s once the workers' prefetch queue is drained
(the first ``2 x workers + 1`` batches are not timed).

``speedups`` (last, after the loader): each of ``--speedups`` (default ``channels_last compile``:
``nightcrawler.models.speed``, what ``MODEL.CHANNELS_LAST`` and ``MODEL.COMPILE`` switch on) on a freshly built
copy of every model, training step and 3x3 test in bf16 (fp32 where bf16 cannot run) with the fused kernel;
each row has ``vs_plain``, its throughput over the same run's plain row of that model, workload and
precision, and the compiled rows ``first_call_seconds`` (the first step, compilation included).
``--compile-backend`` picks the dynamo backend (default ``inductor``; the tests trace with ``aot_eager``).

``--tiny`` swaps in the tiny configs (``uniformer_tiny mvit_tiny sf_tiny``, 8 frames x 64x64), one warm-up and
one timed iteration, small synthetic videos and workers ``0 1``: a smoke run of every code path on a CPU
(``--device cpu``), whose figures are no performance measurement. bf16 on the CPU uses CPU autocast; where
the build cannot, the bf16 rows are skipped with the reason printed and listed under ``skipped``.

Rows not started within ``--max-seconds`` (default 420) are skipped and listed under ``skipped``, as is a row
that runs out of GPU memory; ``benchmarks/gpu_figures.sh`` adds a hard ``timeout``.

``--json OUT`` writes ``{"device": <name>, "device_type", "torch", "cuda", "settings", "rows": [...],
"skipped": [...], "complete", "seconds"}`` after every row (``complete`` false until the end), so a run cut
short by the timeout still leaves the rows it measured.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from nightcrawler.config import ConfigError, load_config
from nightcrawler.data.loader import build_loader
from nightcrawler.data.synthetic import Layout, SyntheticSpec, make_synthetic_dataset
from nightcrawler.engine.losses import log_probabilities
from nightcrawler.models.build import build_model, get_card
from nightcrawler.models.layers import explicit_attention
from nightcrawler.models.speed import compile_in_place, to_channels_last
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.distributed import AMP_DTYPES
from nightcrawler.utils.io import atomic_write_text
from tools.benchmark_models import (
    ATTENTION_MODELS,
    autocast_context,
    resolve_config,
    synchronize,
    time_iterations,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FULL_MODELS = ["uniformer_b32", "mvit_b32", "sf_r101"]
TINY_MODELS = ["uniformer_tiny", "mvit_tiny", "sf_tiny"]
RECIPE = REPO_ROOT / "configs" / "experiments" / "ug2_common.yaml"
VIEWS, CROPS = 3, 3
LEARNING_RATE = 1e-4  # small: the steps change the weights, which must stay finite for every later row
PRECISIONS = ["fp32", "bf16", "fp16"]
DEFAULT_PRECISIONS = ["fp32", "bf16"]
PIN_MEMORY = {"on": True, "off": False}
KERNELS = ["sdpa", "explicit"]
NO_ATTENTION = "none"
WORKLOADS = ("train", "test3x3", "loader")
SPEEDUPS = ("channels_last", "compile")
PLAIN = "none"  # the speedup field of the rows measured without any
SETTINGS = (
    "tiny",
    "models",
    "workloads",
    "batch",
    "test_videos",
    "warmup",
    "iters",
    "workers",
    "loader_batches",
    "max_seconds",
    "speedups",
    "compile_backend",
    "precisions",
    "kernels",
    "pin_memory",
)  # the settings the JSON's header records


@dataclass(frozen=True)
class Defaults:
    """The settings one ``--tiny`` choice implies (each can be overridden on the command line)."""

    models: list[str]
    batch: int
    test_videos: int
    warmup: int
    iters: int
    workers: list[int]
    loader_batches: int
    videos_per_class: int
    video_size: tuple[int, int, int]  # frames, width, height of the synthetic videos


FULL = Defaults(FULL_MODELS, 4, 2, 3, 10, [0, 2, 4, 8], 24, 4, (64, 320, 240))
TINY = Defaults(TINY_MODELS, 2, 1, 1, 1, [0, 1], 2, 2, (12, 64, 48))


# ------------------------------------------------------------------------------------------ set-up


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, with the ``--tiny`` or full-size defaults filled in where an option was not given."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny configs and sizes: a smoke run (CPU tests)")
    p.add_argument("--models", nargs="+", help=f"configs/models names or paths (default {FULL_MODELS})")
    p.add_argument("--batch", type=int, help="clips per training step and per loader batch (default 4)")
    p.add_argument("--test-videos", type=int, help="videos (x 9 clips) per 3x3 test batch (default 2)")
    p.add_argument("--warmup", type=int, help="untimed iterations per row (default 3)")
    p.add_argument("--iters", type=int, help="timed iterations per row (default 10)")
    p.add_argument("--workers", type=int, nargs="+", help="DataLoader worker counts (default 0 2 4 8)")
    p.add_argument("--loader-batches", type=int, help="timed loader batches per worker count (default 24)")
    p.add_argument("--frames", type=int, help="override the configs' DATA.NUM_FRAMES")
    p.add_argument("--crop", type=int, help="override the configs' train and test crop size")
    p.add_argument(
        "--workloads",
        nargs="+",
        default=list(WORKLOADS),
        choices=WORKLOADS,
        help="what to measure (default: all of train test3x3 loader)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: 1 for --tiny on the CPU, which a shared machine oversubscribes otherwise; "
        "else PyTorch's default)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=420.0,
        help="rows not started after this many seconds are skipped (listed under 'skipped'; 0: no limit)",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=list(DEFAULT_PRECISIONS),
        choices=PRECISIONS,
        help=f"default: {' '.join(DEFAULT_PRECISIONS)}",
    )
    p.add_argument(
        "--pin-memory",
        nargs="+",
        default=["on"],
        choices=list(PIN_MEMORY),
        help="loader rows with DATA_LOADER.PIN_MEMORY on and/or off (default: on)",
    )
    p.add_argument(
        "--kernels",
        nargs="+",
        default=list(KERNELS),
        choices=KERNELS,
        help="attention kernels of UniFormer and MViT (default: sdpa explicit)",
    )
    p.add_argument(
        "--speedups",
        nargs="*",
        default=list(SPEEDUPS),
        choices=SPEEDUPS,
        help="model speed-ups measured after the loader (default: channels_last compile; none: give no name)",
    )
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="dynamo backend of the compile rows (default inductor; aot_eager traces without code generation)",
    )
    p.add_argument("--json", help="write the rows to this JSON file (rewritten after every row)")
    args = p.parse_args(argv)
    defaults = TINY if args.tiny else FULL
    for name in ("models", "batch", "test_videos", "warmup", "iters", "workers", "loader_batches"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    args.defaults = defaults
    for name in ("batch", "test_videos", "iters", "loader_batches"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or min(args.workers) < 0:
        raise ConfigError(f"--warmup and --workers cannot be negative, got {args.warmup} and {args.workers}")
    return args


def check_device(name: str) -> torch.device:
    """The torch device ``name``; ConfigError (one paragraph) when it is CUDA and no GPU is visible."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device PyTorch knows ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name} asked for a GPU, but PyTorch sees no CUDA device (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}). Run this on a GPU machine, or pass "
            "--device cpu --tiny for the CPU smoke run."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name (``torch.cuda.get_device_name``), or the CPU's with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()} ({plural(torch.get_num_threads(), 'thread')})"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def autocast_skip_reason(device: torch.device, precision: str) -> str | None:
    """Why ``precision`` (bf16 or fp16) autocast cannot run on ``device`` (None: it can)."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(device)} does not support bf16"
    try:
        with autocast_context(device, precision):
            out = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
    except RuntimeError as exc:
        return f"{precision} autocast fails on {device.type}: {exc}"
    if out.dtype != AMP_DTYPES[precision]:
        return f"{precision} autocast is not active on {device.type} in torch {torch.__version__}"
    return None


def size_opts(frames: int | None, crop: int | None) -> list:
    """``KEY VALUE`` overrides of the clip size (empty: the configs' own)."""
    opts: list = []
    if frames:
        opts += ["DATA.NUM_FRAMES", frames]
    if crop:
        opts += ["DATA.TRAIN_CROP_SIZE", crop, "DATA.TEST_CROP_SIZE", crop]
    return opts


# ------------------------------------------------------------------------------------------ model rows


def train_step(
    model: nn.Module, x: torch.Tensor, num_classes: int, precision: str, explicit: bool
) -> Callable[[], None]:
    """One SGD training step on ``x`` with random labels: forward (autocast), cross-entropy, backward, step; in
    fp16 on CUDA through a ``GradScaler``, as the trainer.

    The backward runs inside the attention switch too: blocks under activation checkpointing
    (``MODEL.USE_CHECKPOINT``) are recomputed there and must take the same kernel as in the forward."""
    device = x.device
    labels = torch.randint(0, num_classes, (x.shape[0],), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    model.train()

    def step() -> None:
        with explicit_attention(explicit):
            with autocast_context(device, precision):
                logits = model(x)
            scaler.scale(F.cross_entropy(logits.float(), labels)).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def test_step(
    model: nn.Module, x: torch.Tensor, videos: int, outputs: str, precision: str, explicit: bool
) -> Callable[[], torch.Tensor]:
    """The 3x3 test of ``videos`` videos: their ``x.shape[0]`` clips in one eval forward, then per video the
    mean of its clips' class probabilities (``outputs``: the model card's kind, logits or probabilities)."""
    device = x.device
    model.eval()

    def step() -> torch.Tensor:
        with torch.no_grad(), explicit_attention(explicit), autocast_context(device, precision):
            probs = log_probabilities(model(x), outputs).exp()
            return probs.view(videos, x.shape[0] // videos, -1).mean(dim=1)

    return step


def clip_batch(count: int, frames: int, crop: int, device: torch.device) -> torch.Tensor:
    """``count`` random clips (count, 3, frames, crop, crop) in float32 on ``device``."""
    return torch.randn(count, 3, frames, crop, crop, device=device)


def free_memory(device: torch.device) -> None:
    """Drops unreferenced tensors and, on CUDA, returns cached blocks (so each row's peak is its own)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def workload_clips(cfg, workload: str, args: argparse.Namespace, device: torch.device):
    """``(crop, batch, clips)`` of one workload: ``--batch`` training clips at the training crop, or
    ``--test-videos`` videos x 9 test clips at the test crop (``batch`` counts videos there)."""
    training = workload == "train"
    crop = cfg.DATA.TRAIN_CROP_SIZE if training else cfg.DATA.TEST_CROP_SIZE
    batch = args.batch if training else args.test_videos
    clips = batch if training else batch * VIEWS * CROPS
    return crop, batch, clip_batch(clips, cfg.DATA.NUM_FRAMES, crop, device)


def workload_step(model: nn.Module, cfg, workload: str, x, batch: int, precision: str, explicit: bool):
    """The step :func:`time_iterations` times: :func:`train_step` or :func:`test_step` on ``x``."""
    if workload == "train":
        return train_step(model, x, cfg.MODEL.NUM_CLASSES, precision, explicit)
    return test_step(model, x, batch, get_card(cfg.MODEL.MODEL_NAME).outputs, precision, explicit)


def model_config(name: str, args: argparse.Namespace):
    """The config of model ``name`` (NUM_GPUS 0: built on the CPU), at ``--frames``/``--crop`` when given."""
    return load_config(str(resolve_config(name)), ["NUM_GPUS", 0, *size_opts(args.frames, args.crop)])


def measure_model(
    name: str, device: torch.device, args: argparse.Namespace, precisions: list[str], report: Report
) -> None:
    """Times the training step and the 3x3 test of one model for every attention kernel and precision."""
    cfg = model_config(name, args)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    kernels = list(args.kernels) if cfg.MODEL.MODEL_NAME in ATTENTION_MODELS else [NO_ATTENTION]
    common = {
        "model": name,
        "arch": cfg.MODEL.MODEL_NAME,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "use_checkpoint": bool(cfg.MODEL.USE_CHECKPOINT),
        "frames": cfg.DATA.NUM_FRAMES,
        "warmup": args.warmup,
        "iters": args.iters,
    }
    for workload in [w for w in ("train", "test3x3") if w in args.workloads]:
        crop, batch, x = workload_clips(cfg, workload, args, device)
        for attention in kernels:
            for precision in precisions:
                what = {"model": name, "workload": workload, "precision": precision, "attention": attention}
                if report.skipped_for_time(what):
                    continue
                step = workload_step(model, cfg, workload, x, batch, precision, attention == "explicit")
                free_memory(device)
                try:
                    timing = time_iterations(step, device, iters=args.iters, warmup=args.warmup)
                except torch.cuda.OutOfMemoryError as exc:
                    timing = None
                    reason = f"out of memory: {str(exc).splitlines()[0]}"
                del step
                model.zero_grad(set_to_none=True)
                if timing is None:
                    free_memory(device)
                    report.skip(what, reason)
                    continue
                figures = model_figures(workload, batch, timing)
                report.add({**common, **what, "speedup": PLAIN, "crop": crop, **figures})
        del x
    del model
    free_memory(device)


def model_figures(workload: str, batch: int, timing: dict) -> dict:
    """A row's batch and throughput fields from :func:`time_iterations`' result (median time per iteration)."""
    seconds = timing["median_seconds"]
    clips = batch if workload == "train" else batch * VIEWS * CROPS
    peak = timing["peak_gib"]
    figures = {
        "batch": batch,
        "batch_unit": "clips" if workload == "train" else "videos",
        "clips_per_iter": clips,
        "clips_per_s": clips / seconds,
        "best_seconds": timing["best_seconds"],
        "median_seconds": seconds,
        "peak_mem_gb": None if peak is None else peak * 2**30 / 1e9,
    }
    if workload == "test3x3":
        figures["videos_per_s"] = batch / seconds
    return figures


def measure_speedup(
    name: str, speedup: str, device: torch.device, args: argparse.Namespace, precision: str, report
) -> None:
    """The training step and 3x3 test of model ``name`` with ``speedup``, each on a fresh copy built with the
    same seed, in ``precision`` with the fused attention kernel; ``vs_plain`` compares each row with the same
    run's plain row. A speed-up that fails (a compiler missing, say) is skipped with its reason."""
    cfg = model_config(name, args)
    attention = "sdpa" if cfg.MODEL.MODEL_NAME in ATTENTION_MODELS else NO_ATTENTION
    for workload in [w for w in ("train", "test3x3") if w in args.workloads]:
        what = {"model": name, "workload": workload, "precision": precision, "attention": attention}
        what["speedup"] = speedup
        if report.skipped_for_time(what):
            continue
        crop, batch, x = workload_clips(cfg, workload, args, device)
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        torch._dynamo.reset()
        step, first = None, None
        try:
            if speedup == "channels_last":
                to_channels_last(model)
            else:
                compile_in_place(model, backend=args.compile_backend)
            step = workload_step(model, cfg, workload, x, batch, precision, False)
            if speedup == "compile":  # the first call compiles: timed on its own, then the usual warm-up
                start = time.perf_counter()
                step()
                synchronize(device)
                first = time.perf_counter() - start
            timing = time_iterations(step, device, iters=args.iters, warmup=args.warmup)
        except Exception as exc:  # noqa: BLE001 - a failing speed-up is a finding, reported as a skip
            timing, reason = None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        del model, x, step
        free_memory(device)
        torch._dynamo.reset()
        if timing is None:
            report.skip(what, reason)
            continue
        figures = model_figures(workload, batch, timing)
        plain = report.find(name, workload, precision, attention)
        ratio = figures["clips_per_s"] / plain["clips_per_s"] if plain else None
        extra = {"vs_plain": ratio} | ({"first_call_seconds": first} if first is not None else {})
        report.add({"model": name, "arch": cfg.MODEL.MODEL_NAME, **what, "crop": crop, **figures, **extra})


# ------------------------------------------------------------------------------------------ loader rows


def make_videos(folder: Path, args: argparse.Namespace) -> Path:
    """Labelled synthetic dark videos with the training list, under ``folder`` (the data root)."""
    frames, width, height = args.defaults.video_size
    spec = SyntheticSpec(
        seed=0,
        num_classes=2 if args.tiny else 11,
        videos_per_class=args.defaults.videos_per_class,
        frames=frames,
        width=width,
        height=height,
        procedural=args.tiny,
        per_source=(("dry", 0), ("dark", 0), ("arid", 0), ("test", 0)),
    )
    workers = 1 if args.tiny else min(8, os.cpu_count() or 1)
    make_synthetic_dataset(folder, spec, Layout(), workers=workers)
    return folder


def loader_config(model: str, root: Path, args: argparse.Namespace):
    """The shipped training recipe on ``model``'s config, reading the videos under ``root``."""
    base = root / "loader.yaml"
    base.write_text(f"_BASE_: [{RECIPE}, {resolve_config(model).resolve()}]\n")
    opts = ["NUM_GPUS", 0, "DATA.PATH_PREFIX", str(root), *size_opts(args.frames, args.crop)]
    return load_config(str(base), opts)


def endless(loader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch (persistent workers carry over)."""
    while True:
        yield from loader


def time_loader(loader, warmup_batches: int, timed_batches: int, device: torch.device) -> dict:
    """Clips per second delivered on ``device`` over ``timed_batches`` batches after ``warmup_batches`` untimed
    ones."""
    batches = endless(loader)
    try:
        for _ in range(warmup_batches):
            next(batches)
        clips, start = 0, time.perf_counter()
        for _ in range(timed_batches):
            clips += next(batches)["inputs"].to(device, non_blocking=True).shape[0]
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        batches.close()
    return {"clips": clips, "seconds": seconds, "clips_per_s": clips / seconds}


def measure_loader(args: argparse.Namespace, device: torch.device, report: Report) -> None:
    """Training-loader throughput to ``device`` with each ``--pin-memory`` setting and ``--workers`` count, on
    freshly generated synthetic videos."""
    model = args.models[0]
    with tempfile.TemporaryDirectory(prefix="gpu_figures_") as tmp:
        root = make_videos(Path(tmp), args)
        cfg = loader_config(model, root, args)
        videos = max(1, args.batch // cfg.AUG.NUM_SAMPLE)
        for pin, workers in itertools.product(args.pin_memory, args.workers):
            what = {"model": model, "workload": "loader", "workers": workers, "pin_memory": pin}
            if report.skipped_for_time(what):
                continue
            cfg.DATA_LOADER.PIN_MEMORY = PIN_MEMORY[pin]
            loader = build_loader(cfg, "train_label", batch_size=videos, num_workers=workers)
            result = time_loader(loader, 2 * workers + 1, args.loader_batches, device)
            pinned = loader.pin_memory  # what the loader did: pinning needs CUDA
            del loader
            gc.collect()
            report.add(
                {
                    **what,
                    "precision": None,
                    "attention": None,
                    "frames": cfg.DATA.NUM_FRAMES,
                    "crop": cfg.DATA.TRAIN_CROP_SIZE,
                    "batch": videos * cfg.AUG.NUM_SAMPLE,
                    "batch_unit": "clips",
                    "videos_per_batch": videos,
                    "timed_batches": args.loader_batches,
                    "clips_per_s": result["clips_per_s"],
                    "seconds": result["seconds"],
                    "pinned": pinned,
                    "peak_mem_gb": None,
                }
            )


# ------------------------------------------------------------------------------------------ report


def plural(count: int, noun: str) -> str:
    """``1 video``, ``2 videos``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def throughput_text(row: dict) -> str:
    """``12.3 clips/s`` (``videos/s`` for the test rows), two decimals below 10."""
    unit, value = (
        ("videos/s", row["videos_per_s"]) if "videos_per_s" in row else ("clips/s", row["clips_per_s"])
    )
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


def format_row(row: dict) -> str:
    """One markdown table row."""
    workload = row["workload"]
    if workload == "loader":
        pin = {True: ", pinned", False: ", not pinned"}.get(row.get("pinned"), "")
        workload = f"loader, {plural(row['workers'], 'worker')}{pin}"
    elif row.get("speedup", PLAIN) != PLAIN:
        ratio = f", {row['vs_plain']:.2f}x" if row.get("vs_plain") else ""
        workload = f"{workload} + {row['speedup']}{ratio}"
    batch = plural(row["batch"], row["batch_unit"].rstrip("s"))
    if row["workload"] == "test3x3":
        batch += f" ({row['clips_per_iter']} clips)"
    median = f"{row['median_seconds'] * 1000:.1f}" if "median_seconds" in row else "-"
    peak = "-" if row["peak_mem_gb"] is None else f"{row['peak_mem_gb']:.2f}"
    cells = [row["model"], workload, row["precision"] or "-", row["attention"] or "-", batch]
    return "| " + " | ".join([*cells, throughput_text(row), median, peak]) + " |"


TABLE_HEADER = (
    "| model | workload | precision | attention | batch | throughput | median ms/iter | peak GB |\n"
    "|---|---|---|---|---|---|---|---|"
)


class Report:
    """The run's rows: printed as they come, and the JSON rewritten after each (``complete`` at the end)."""

    def __init__(self, path: str | None, header: dict, max_seconds: float = 0.0):
        self.path = path
        self.max_seconds = max_seconds
        self.data = {**header, "rows": [], "skipped": [], "complete": False, "seconds": 0.0}
        self.start = time.perf_counter()

    def over_budget(self) -> bool:
        """Whether the run has used its ``max_seconds`` (0: no limit); later rows are then skipped."""
        return bool(self.max_seconds) and time.perf_counter() - self.start > self.max_seconds

    def skipped_for_time(self, what: dict) -> bool:
        """Skips row ``what`` (and says so) when the run has used its ``max_seconds``."""
        if self.over_budget():
            self.skip(what, f"time budget of {self.max_seconds:.0f} s spent (--max-seconds)")
            return True
        return False

    def find(self, model: str, workload: str, precision: str, attention: str) -> dict | None:
        """The run's plain (no speed-up) row of that model, workload, precision and attention, if measured."""
        for row in self.data["rows"]:
            key = (row["model"], row["workload"], row["precision"], row["attention"], row.get("speedup"))
            if key == (model, workload, precision, attention, PLAIN):
                return row
        return None

    def add(self, row: dict) -> None:
        self.data["rows"].append(row)
        print(format_row(row), flush=True)
        self.write()

    def skip(self, what: dict, reason: str) -> None:
        self.data["skipped"].append({**what, "reason": reason})
        print(f"skipped {' '.join(str(v) for v in what.values())}: {reason}", file=sys.stderr, flush=True)
        self.write()

    def finish(self) -> None:
        self.data["complete"] = True
        self.write()

    def write(self) -> None:
        self.data["seconds"] = round(time.perf_counter() - self.start, 1)
        if self.path:
            atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")


# ------------------------------------------------------------------------------------------ main


def resolve_models(names: list[str]) -> None:
    """ConfigError naming the first model that is neither a config path nor in configs/models."""
    for name in names:
        try:
            resolve_config(name)
        except FileNotFoundError:
            known = sorted(p.stem for p in (REPO_ROOT / "configs" / "models").glob("*.yaml"))
            raise ConfigError(
                f"unknown model {name!r}: neither a config file nor configs/models/{name}.yaml "
                f"(configs/models has: {', '.join(known)})"
            ) from None


def run_header(device: torch.device, args: argparse.Namespace) -> dict:
    """The JSON's header: the device, the software and the settings of the run."""
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tf32": False,
        "settings": {k: getattr(args, k) for k in SETTINGS}
        | {"frames": args.frames, "crop": args.crop, "threads": torch.get_num_threads()},
    }


def print_header(header: dict, args: argparse.Namespace) -> None:
    """The run's header lines, then the table's header."""
    cudnn = f", cuDNN {header['cudnn']}" if header["cudnn"] else ""
    print(f"GPU figures, {header['device_type']}: {header['device']}; torch {header['torch']}, ", end="")
    print(f"CUDA {header['cuda']}{cudnn}, TF32 off")
    test = f"{plural(args.test_videos, 'video')} x 9 clips"
    print(f"train: {plural(args.batch, 'clip')} per SGD step; test 3x3: {test} per batch; ", end="")
    print(f"{args.warmup} warm-up + {args.iters} timed iterations (median); loader workers {args.workers}")
    if args.tiny:
        print("--tiny: tiny configs and sizes, a smoke run of the code paths, not a performance figure")
    print(TABLE_HEADER, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    device = check_device(args.device)
    resolve_models(args.models)
    threads = args.threads or (1 if args.tiny and device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = device.type == "cuda"
    header = run_header(device, args)
    print_header(header, args)
    report = Report(args.json, header, args.max_seconds)
    precisions, reasons = [], []
    for precision in (p for p in PRECISIONS if p in args.precisions):
        reason = None if precision == "fp32" else autocast_skip_reason(device, precision)
        if reason:
            reasons.append(reason)
            report.skip({"precision": precision}, reason)
        else:
            precisions.append(precision)
    for name in args.models if {"train", "test3x3"} & set(args.workloads) else []:
        measure_model(name, device, args, precisions, report)
    if "loader" in args.workloads:
        measure_loader(args, device, report)
    if not precisions:
        raise ConfigError(
            f"no precision of --precisions {' '.join(args.precisions)} can run: {'; '.join(reasons)}"
        )
    speedup_precision = (
        "bf16" if "bf16" in precisions else precisions[-1]
    )  # the fastest measured where it runs
    for speedup in args.speedups:  # the quick channels-last rows of every model before any compilation
        for name in args.models if {"train", "test3x3"} & set(args.workloads) else []:
            measure_speedup(name, speedup, device, args, speedup_precision, report)
    report.finish()
    print(f"done in {report.data['seconds']:.0f} s" + (f"; rows in {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
