#!/usr/bin/env python
"""Trains the ``learned_curve`` enhancement (a Zero-DCE-style curve estimator) on unlabelled dark video frames.

    python tools/train_enhancer.py --cfg CONFIG [--split train_unlabel] --out curve.pyth [--steps N --batch B
                                   --lr LR --size S --frames-per-video K --workers W] [KEY VALUE ...]
    python tools/train_enhancer.py --videos FOLDER --out curve.pyth [...]

With --cfg the videos are those of --split (default ``train_unlabel``: the dark training videos and ARID) from
DATA.PATH_PREFIX and the DATA.CSV_* / DATA.ROOT_* keys, decoded with DATA.DECODING_BACKEND; trailing KEY VALUE
pairs override the config. With --videos, every video file below FOLDER. No label is read.

Each step draws ceil(B / K) random videos, decodes K random frames of each and takes one random S x S crop per
frame (frames smaller than S are upscaled first), B crops in all. The network and its four non-reference losses
are ``nightcrawler/models/light_curve.py``; Adam with weight decay 1e-4 and gradient-norm clipping at 0.1, as
the family trains. The loss terms go to TensorBoard (--logdir, default ``<out stem>_tb`` beside --out) and the
progress bar; the checkpoint (weights, network arguments, training settings, final losses) is written
atomically every --save-every steps and at the end. Use it as ``ENHANCE.TEST learned_curve:checkpoint=OUT``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

from nightcrawler.config import ConfigError
from nightcrawler.config.checks import loader_workers
from nightcrawler.data.decoders import BackendUnavailableError, VideoDecodeError, open_video
from nightcrawler.data.ug2 import MAX_REPLACEMENTS
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.errors import EXIT_OK, TrainingDivergedError

logger = logging.getLogger("train_enhancer")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("videos (--cfg, or --videos)")
    src.add_argument("--cfg", help="config YAML: the videos of --split")
    src.add_argument("--split", default="train_unlabel", help="split of the config (default train_unlabel)")
    src.add_argument("--videos", help="a folder: every video file below it")
    src.add_argument("--backend", help="decoding backend (default DATA.DECODING_BACKEND, or auto)")
    p.add_argument("--out", required=True, help="checkpoint to write (e.g. curve.pyth)")
    p.add_argument("--logdir", help="TensorBoard folder (default <out stem>_tb beside --out)")
    p.add_argument("--steps", type=int, default=2000, help="optimisation steps (default 2000)")
    p.add_argument("--batch", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256, at least 16)")
    p.add_argument(
        "--frames-per-video", type=int, default=2, help="frames decoded per drawn video (default 2)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader processes (default: DATA_LOADER.NUM_WORKERS, resolved per machine when it is -1)",
    )
    p.add_argument("--channels", type=int, default=32, help="network width (default 32)")
    p.add_argument("--depth", type=int, default=7, help="convolutions, odd (default 7)")
    p.add_argument("--iterations", type=int, default=8, help="curve iterations (default 8)")
    p.add_argument("--exposure", type=float, default=0.6, help="well-exposedness level E (default 0.6)")
    p.add_argument(
        "--save-every", type=int, default=500, help="also write the checkpoint every N steps (0: end only)"
    )
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (with --cfg)")
    args = p.parse_args(argv)
    if bool(args.cfg) == bool(args.videos):
        p.error("give either --cfg CONFIG [--split SPLIT] or --videos FOLDER")
    if args.opts and not args.cfg:
        p.error("KEY VALUE overrides go with --cfg")
    for name in ("steps", "batch", "frames_per_video", "channels", "iterations"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.size < 16:
        p.error("--size must be >= 16 (the exposure loss works on 16x16 patches)")
    if args.depth < 3 or args.depth % 2 == 0:
        p.error("--depth must be odd and >= 3")
    if not (args.lr > 0 and math.isfinite(args.lr)) or not 0 < args.exposure < 1:
        p.error("--lr must be > 0 and --exposure in (0, 1)")
    if (args.workers is not None and args.workers < 0) or args.save_every < 0:
        p.error("--workers and --save-every must be >= 0")
    return args


# ---------------------------------------------------------------------------------------------------- videos
def video_paths(args: argparse.Namespace) -> tuple[list[str], str, int]:
    """(video files, decoding backend, loader workers) of what ``args`` names."""
    from nightcrawler.data.csvs import list_videos, parse_video_list
    from nightcrawler.data.ug2 import resolve_video_paths, split_paths

    if args.videos:
        try:
            names = list_videos(args.videos)
        except ValueError as exc:  # a folder without videos
            raise FileNotFoundError(str(exc)) from None
        return [os.path.join(args.videos, n) for n in names], args.backend or "auto", args.workers or 0

    from nightcrawler.config import load_config

    cfg = load_config(args.cfg, args.opts)
    try:
        csv_path, roots = split_paths(cfg, args.split)
    except ValueError as exc:  # unknown split, empty DATA.CSV_* key
        raise ConfigError(str(exc)) from None
    rows = parse_video_list(
        csv_path, num_classes=cfg.MODEL.NUM_CLASSES, separator=cfg.DATA.PATH_LABEL_SEPARATOR
    )
    paths, missing = resolve_video_paths(rows, roots)
    if missing:
        logger.warning(
            "%d of %d videos of %s are missing (first: %s)", len(missing), len(rows), csv_path, missing[0]
        )
        paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise FileNotFoundError(f"no video of {csv_path} found under {' or '.join(roots)}")
    workers = loader_workers(cfg) if args.workers is None else args.workers
    return paths, args.backend or cfg.DATA.DECODING_BACKEND, workers


class RandomFrameCrops(Dataset):
    """Item ``i``: ``frames_per_video`` random frames of video ``i`` (another random video when it fails to
    decode), one random ``size`` x ``size`` crop of each, as uint8 ``(K, size, size, 3)``."""

    def __init__(self, paths: Sequence[str], frames_per_video: int, size: int, backend: str = "auto"):
        self.paths = list(paths)
        self.frames_per_video = frames_per_video
        self.size = size
        self.backend = backend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = random.Random(int(torch.randint(0, 2**62, ()).item()))  # seeded by the loader's torch RNG
        for _ in range(MAX_REPLACEMENTS):
            path = self.paths[index]
            try:
                with open_video(path, self.backend) as reader:
                    n = len(reader)
                    k = self.frames_per_video
                    picks = sorted(rng.sample(range(n), k) if n >= k else rng.choices(range(n), k=k))
                    frames = reader.frames_at(picks)
                return torch.stack([self.crop(f, rng) for f in frames])
            except BackendUnavailableError:
                raise
            except (VideoDecodeError, OSError, RuntimeError, ValueError) as exc:
                logger.warning("%s; using a random other video instead", exc)
                index = rng.randrange(len(self.paths))
        raise VideoDecodeError(path, f"{MAX_REPLACEMENTS} videos in a row failed to decode (the last one)")

    def crop(self, frame: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """One random ``size`` x ``size`` crop of a uint8 ``(H, W, 3)`` frame (upscaled first when smaller)."""
        h, w = frame.shape[:2]
        if min(h, w) < self.size:
            factor = self.size / min(h, w)
            size = (max(self.size, round(h * factor)), max(self.size, round(w * factor)))
            chw = frame.permute(2, 0, 1)[None].float()
            frame = F.interpolate(chw, size=size, mode="bilinear", align_corners=False)[0]
            frame = frame.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            h, w = size
        top, left = rng.randint(0, h - self.size), rng.randint(0, w - self.size)
        return frame[top : top + self.size, left : left + self.size]


def crop_batches(dataset: RandomFrameCrops, batch: int, steps: int, workers: int):
    """``steps`` float batches ``(batch, 3, S, S)`` in [0, 1], each from ceil(batch / K) random videos."""
    videos = math.ceil(batch / dataset.frames_per_video)
    sampler = RandomSampler(dataset, replacement=True, num_samples=steps * videos)
    loader = DataLoader(
        dataset, batch_size=videos, sampler=sampler, num_workers=workers, collate_fn=torch.cat, drop_last=True
    )
    for crops in loader:
        yield crops[:batch].permute(0, 3, 1, 2).float().div_(255.0)


# ---------------------------------------------------------------------------------------------------- training
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device here")
    return device


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from nightcrawler.data.enhance_curve import curve_checkpoint
    from nightcrawler.models.light_curve import CurveEstimator, CurveLossWeights, zero_reference_losses
    from nightcrawler.utils.io import atomic_torch_save

    paths, backend, workers = video_paths(args)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    model = CurveEstimator(args.channels, args.depth, args.iterations).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    weights = CurveLossWeights()
    logdir = args.logdir or os.path.splitext(args.out)[0] + "_tb"
    dataset = RandomFrameCrops(paths, args.frames_per_video, args.size, backend)
    settings = {
        "videos": len(paths), "steps": args.steps, "batch": args.batch, "lr": args.lr, "size": args.size,
        "frames_per_video": args.frames_per_video, "exposure_level": args.exposure, "seed": args.seed,
        "loss_weights": weights.as_dict(),
    }  # fmt: skip
    logger.info(
        "training on %d videos for %d steps (%s); TensorBoard: %s", len(paths), args.steps, device, logdir
    )

    def save(step: int, recent: list[float]) -> None:
        info = {"train": {**settings, "steps_done": step, "final_loss": sum(recent) / max(1, len(recent))}}
        atomic_torch_save(curve_checkpoint(model, **info), args.out)

    recent: list[float] = []
    batches = crop_batches(dataset, args.batch, args.steps, workers)
    bar = tqdm(
        total=args.steps, desc="train_enhancer", unit="step", dynamic_ncols=True, disable=args.no_progress
    )
    with SummaryWriter(logdir) as writer, bar:
        for step, x in enumerate(batches, start=1):
            x = x.to(device, non_blocking=True)
            enhanced, maps = model(x)
            losses = zero_reference_losses(x, enhanced, maps, weights, args.exposure)
            total = losses["total"]
            if not torch.isfinite(total):
                raise TrainingDivergedError(
                    f"learned-curve loss is {total.item()} at step {step}; {args.out} was not updated since "
                    "its last save (try a lower --lr)"
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            for name, value in losses.items():
                writer.add_scalar(f"loss/{name}", value.item(), step)
            writer.add_scalar("enhanced_mean", enhanced.mean().item(), step)
            recent = (recent + [total.item()])[-10:]
            bar.set_postfix(loss=f"{total.item():.4f}", mean=f"{enhanced.mean().item():.3f}")
            bar.update()
            if args.save_every and step % args.save_every == 0 and step < args.steps:
                save(step, recent)
        save(args.steps, recent)
    print(f"wrote {args.out} ({args.steps} steps, loss {recent[-1]:.4f}); TensorBoard scalars in {logdir}")
    print(f"use it as: ENHANCE.TEST learned_curve:checkpoint={args.out}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
