#!/usr/bin/env python
"""Checks every video of a split (or of any list) once and reports every bad file in one table.

    python tools/check_videos.py --cfg CONFIG [--split SPLIT] [--workers N] [--out report.csv] [--backend B]
                                 [--min-frames N] [KEY VALUE ...]
    python tools/check_videos.py --csv LIST --root FOLDER [--root FOLDER ...] [--workers N] [--out report.csv]

With --cfg the list and video roots of --split (default TEST.DATA_SELECT) come from DATA.PATH_PREFIX and the
DATA.CSV_* / DATA.ROOT_* keys, as the tester reads them; trailing KEY VALUE pairs override the config.
Problems (missing, empty, unreadable, undecodable, short) are defined in ``nightcrawler/data/check.py``.
Writes a CSV report of every video (default ``<list stem>_check.csv`` beside the list) and exits 0 when every
video is good, 3 when any is bad.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from nightcrawler.data.check import check_videos, default_workers, format_table, summary_line, write_report
from nightcrawler.data.csvs import parse_video_list
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.errors import EXIT_DATA, EXIT_OK


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("what to check (--cfg, or --csv with --root)")
    src.add_argument("--cfg", help="config YAML: the list and roots of --split")
    src.add_argument("--split", help="split of the config to check (default TEST.DATA_SELECT)")
    src.add_argument("--csv", help="a video list (headerless CSV, first field the relative path)")
    src.add_argument("--root", action="append", default=[], help="folder the list's paths are under (repeat)")
    p.add_argument("--workers", type=int, default=0, help=f"parallel checks (default {default_workers()})")
    p.add_argument("--out", help="report CSV (default <list stem>_check.csv beside the list)")
    p.add_argument("--backend", help="decoding backend (default DATA.DECODING_BACKEND, or auto)")
    p.add_argument("--min-frames", type=int, default=1, help="fewer decodable frames than this: short")
    p.add_argument("--separator", default=None, help="field separator of --csv (default ',')")
    p.add_argument("--num-classes", type=int, default=None, help="classes of --csv labels (default 11)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (with --cfg)")
    args = p.parse_args(argv)
    if bool(args.cfg) == bool(args.csv):
        p.error("give either --cfg CONFIG [--split SPLIT] or --csv LIST --root FOLDER")
    if args.csv and not args.root:
        p.error("--csv needs at least one --root FOLDER")
    if args.cfg and (args.root or args.separator or args.num_classes):
        p.error("--root, --separator and --num-classes go with --csv; with --cfg the config gives them")
    if args.workers < 0:
        p.error("--workers must be >= 0 (0: default)")
    return args


def resolve(args: argparse.Namespace) -> tuple[str, list[str], list[str], list[str], str]:
    """(list file, roots, full paths, list names, backend) of what ``args`` asks to check."""
    from nightcrawler.data.ug2 import resolve_video_paths

    if args.cfg:
        from nightcrawler.config import load_config
        from nightcrawler.data.ug2 import split_paths

        cfg = load_config(args.cfg, args.opts)
        split = args.split or cfg.TEST.DATA_SELECT
        csv_path, roots = split_paths(cfg, split)
        separator, num_classes = cfg.DATA.PATH_LABEL_SEPARATOR, cfg.MODEL.NUM_CLASSES
        backend = args.backend or cfg.DATA.DECODING_BACKEND
    else:
        csv_path, roots = args.csv, list(args.root)
        separator, num_classes = args.separator or ",", args.num_classes or 11
        backend = args.backend or "auto"
    rows = parse_video_list(csv_path, num_classes=num_classes, separator=separator)
    paths, _ = resolve_video_paths(rows, roots)
    return csv_path, roots, paths, [r.path for r in rows], backend


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    csv_path, roots, paths, names, backend = resolve(args)
    records = check_videos(
        paths,
        names,
        backend=backend,
        min_frames=args.min_frames,
        workers=args.workers or None,
        progress=not args.no_progress,
        desc=os.path.basename(csv_path),
    )
    out = args.out or os.path.splitext(csv_path)[0] + "_check.csv"
    write_report(records, out)
    table = format_table(records)
    if table:
        print(table, end="")
    print(f"{csv_path} under {' or '.join(roots)}: {summary_line(records)}; report: {out}")
    return EXIT_DATA if table else EXIT_OK


if __name__ == "__main__":
    sys.exit(run_cli(main))  # user errors: one paragraph and their exit code
