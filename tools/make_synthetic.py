#!/usr/bin/env python
"""Writes a small synthetic dark-video data set with the real data's folders and CSV lists.

Example (the demo size, about half a minute on two cores)::

    python tools/make_synthetic.py --out data/synthetic --seed 0 --videos-per-class 4 --frames 48

Point DATA.PATH_PREFIX at ``--out``; the labels of the dark-train and test videos are in ``--out/hidden/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from nightcrawler.config import get_cfg
from nightcrawler.data.synthetic import (
    CLASS_NAMES,
    MOTIONS,
    Layout,
    SyntheticSpec,
    make_synthetic_dataset,
)
from nightcrawler.utils.cli import run_cli


def _source_count(text: str) -> tuple[str, int]:
    source, sep, count = text.partition("=")
    if not sep or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected SOURCE=COUNT (e.g. test=28), got {text!r}")
    return source, int(count)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="data root to create (plays the role of DATA.PATH_PREFIX)")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives the same videos")
    p.add_argument(
        "--num-classes", type=int, default=len(CLASS_NAMES), help="first C of Drink..Wave (default 11)"
    )
    p.add_argument(
        "--videos-per-class", type=int, default=4, help="videos per class in every source (default 4)"
    )
    p.add_argument(
        "--labeled-per-class",
        type=int,
        default=None,
        help="labelled training videos per class (default: as above)",
    )
    p.add_argument("--frames", type=int, default=64, help="frames of the longest video, 30 fps (default 64)")
    p.add_argument(
        "--class-cue",
        type=float,
        default=0.0,
        help="strength in [0, 1] of a class-specific object appearance (0: the motion alone tells the class)",
    )
    p.add_argument("--width", type=int, default=320, help="frame width (default 320)")
    p.add_argument("--height", type=int, default=240, help="frame height (default 240)")
    p.add_argument(
        "--per-source",
        nargs="+",
        type=_source_count,
        default=[],
        metavar="SOURCE=N",
        help="videos per class of single sources (labeled, dry, dark, arid, test); 0 leaves one out",
    )
    p.add_argument(
        "--motions",
        nargs="+",
        default=None,
        help=f"the classes' motions in label order instead of --num-classes (any of {', '.join(MOTIONS)})",
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="render processes")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
        print(
            f"error: {args.out} exists and is not empty (pass --overwrite to write into it)", file=sys.stderr
        )
        return 2
    spec = SyntheticSpec(
        seed=args.seed,
        num_classes=args.num_classes,
        videos_per_class=args.videos_per_class,
        labeled_per_class=args.labeled_per_class,
        frames=args.frames,
        class_cue=args.class_cue,
        width=args.width,
        height=args.height,
        per_source=tuple(args.per_source),
        motions=tuple(args.motions) if args.motions else None,
    )
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if done == total or time.time() - last[0] > 5:
            last[0] = time.time()
            print(f"  {done}/{total} videos", flush=True)

    try:
        summary = make_synthetic_dataset(
            args.out, spec, Layout.from_cfg(get_cfg()), workers=args.workers, progress=progress
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"synthetic set written to {summary.out_dir} in {summary.seconds:.1f} s")
    for source, n in summary.videos.items():
        print(f"  videos {source:8s} {n}")
    for name, n in summary.csvs.items():
        print(f"  {name:24s} {n} rows")
    print(f"  hidden labels: {os.path.join(summary.out_dir, 'hidden')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
