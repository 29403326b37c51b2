#!/usr/bin/env python
"""Builds the video lists (CSV) of every split from the UG2+ 2022 Track 2 and ARID v1.5 folders.

    python tools/generate_csv.py --prefix /data/ug2 [--cfg config.yaml] [--check-videos] [--force] [KEY VALUE ...]

The folders are DATA.ROOT_* under --prefix (see data/README.md); the list names are DATA.CSV_* (override them
with trailing KEY VALUE pairs or --cfg). Labels come from the class folder (ARID, or labelled videos stored in
class folders) or from the class word in a labelled video's file name (``Drink_...``); dark-train and test
videos get -1. Rows are in natural file-name order (``2.mp4`` before ``10.mp4``); total_unlabel is the
dark-train rows followed by the ARID rows.

Existing lists are never overwritten without --force: pseudo-label CSVs and test PKLs refer to rows of the
lists they were made from, so a regenerated list in a different order would silently mismatch them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from nightcrawler.config import load_config
from nightcrawler.data.csvs import VIDEO_SUFFIXES, VideoRow, is_video_file, natural_sort_key, write_video_list
from nightcrawler.data.splits import CLASS_NAMES
from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.errors import EXIT_CONFIG, EXIT_DATA

REAL_COUNTS = {"labeled": 2625, "dry": 330, "dark": 3088, "arid": 6207, "test": 3103}  # spec §1.1
SOURCES = {  # source -> (config key of its folder, how rows are labelled)
    "labeled": ("ROOT_LABELED", "name"),
    "dry": ("ROOT_DRY", "name"),
    "dark": ("ROOT_DARK", "unlabelled"),
    "arid": ("ROOT_ARID", "folder"),
    "test": ("ROOT_TEST", "unlabelled"),
}
LISTS = {  # config key of the list -> sources it concatenates, whether labels are kept
    "CSV_TRAIN_LABEL": (("labeled", "dry"), True),
    "CSV_VAL_DRY": (("dry",), True),
    "CSV_ARID": (("arid",), True),
    "CSV_DARK_UNLABEL": (("dark",), False),
    "CSV_TOTAL_UNLABEL": (("dark", "arid"), False),
    "CSV_TEST": (("test",), False),
}


class ScanError(ValueError):
    """A data folder that cannot be turned into a list (the message says which files and why)."""


@dataclass
class Source:
    """The videos found for one source."""

    name: str
    folder: str
    rows: list[VideoRow]


def class_from_name(file_name: str, classes: Sequence[str]) -> int | None:
    """Index of the one class whose name is a word of ``file_name`` (case-insensitive), else None."""
    words = {
        w.lower() for w in re.split(r"[^A-Za-z]+", os.path.splitext(os.path.basename(file_name))[0]) if w
    }
    found = [i for i, c in enumerate(classes) if c.lower() in words]
    return found[0] if len(found) == 1 else None


def _class_folder(name: str, classes: Sequence[str]) -> int | None:
    lowered = [c.lower() for c in classes]
    return lowered.index(name.lower()) if name.lower() in lowered else None


def _unlabelled_files(folder: str) -> list[str]:
    """Video files directly in ``folder`` (sub-folders, e.g. linked ARID classes, are not part of it)."""
    return [f for f in os.listdir(folder) if is_video_file(f) and os.path.isfile(os.path.join(folder, f))]


def scan_source(name: str, folder: str, classes: Sequence[str]) -> Source:
    """Lists and labels the videos of one source; raises ScanError for videos whose class cannot be told."""
    mode = SOURCES[name][1]
    if not os.path.isdir(folder):
        raise ScanError(f"{name}: folder not found: {folder}")
    rows: list[VideoRow] = []
    unknown: list[str] = []
    if mode == "unlabelled":
        rows = [VideoRow(f, -1) for f in _unlabelled_files(folder)]
    else:
        for entry in sorted(os.listdir(folder), key=natural_sort_key):
            full = os.path.join(folder, entry)
            if os.path.isdir(full):
                label = _class_folder(entry, classes)
                if label is None:
                    if mode == "folder":
                        unknown.append(entry + "/")
                    continue
                rows += [VideoRow(f"{entry}/{f}", label) for f in os.listdir(full) if is_video_file(f)]
            elif is_video_file(entry):
                label = class_from_name(entry, classes) if mode == "name" else None
                if label is None:
                    unknown.append(entry)
                else:
                    rows.append(VideoRow(entry, label))
        if unknown:
            listing = ", ".join(unknown[:10]) + (
                f", ... ({len(unknown)} in all)" if len(unknown) > 10 else ""
            )
            where = (
                "a class folder" if mode == "folder" else "a class folder or a class word in the file name"
            )
            raise ScanError(
                f"{name} ({folder}): cannot tell the class of {listing}; expected {where} "
                f"(one of {', '.join(classes)})"
            )
    if not rows:
        raise ScanError(f"{name}: no video files ({', '.join(VIDEO_SUFFIXES)}) in {folder}")
    if mode == "folder":  # ARID: class by class, natural order inside a class
        rows.sort(key=lambda r: (r.label, natural_sort_key(r.path)))
    else:
        rows.sort(key=lambda r: natural_sort_key(r.path))
    return Source(name, folder, rows)


def check_videos(source: Source, backend: str) -> list[str]:
    """Messages for the videos of ``source`` that do not open or whose first and last frames do not decode."""
    from nightcrawler.data.decoders import VideoDecodeError, open_video

    bad = []
    for row in source.rows:
        path = os.path.join(source.folder, row.path)
        try:
            with open_video(path, backend) as reader:
                reader.frames_at([0, reader.num_frames - 1])
        except (VideoDecodeError, IndexError) as exc:
            bad.append(f"{path}: {exc}")
    return bad


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--prefix",
        "--root",
        dest="prefix",
        required=True,
        help="data root with the source folders (DATA.PATH_PREFIX)",
    )
    p.add_argument("--out", default=None, help="folder for the lists (default: --prefix)")
    p.add_argument("--cfg", default=None, help="config whose DATA.ROOT_* / DATA.CSV_* names to use")
    p.add_argument("--separator", default=",", help="field separator (default ',', as the shipped lists)")
    p.add_argument(
        "--check-videos", action="store_true", help="open every video and decode its first/last frame"
    )
    p.add_argument("--backend", default="auto", help="decoder for --check-videos (default auto)")
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="skip lists whose source folders are missing instead of failing",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing lists")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    cfg = load_config(args.cfg, args.opts)
    out_dir = args.out or args.prefix
    classes = CLASS_NAMES

    sources: dict[str, Source] = {}
    problems: list[str] = []
    for name, (root_key, _) in SOURCES.items():
        folder = os.path.join(args.prefix, cfg.DATA[root_key])
        try:
            sources[name] = scan_source(name, folder, classes)
        except ScanError as exc:
            missing = not os.path.isdir(folder)
            if missing and args.allow_missing:
                print(f"warning: {exc} (DATA.{root_key}); lists that need it are skipped", file=sys.stderr)
            else:
                problems.append(f"{exc}" + (f" (DATA.{root_key} under --prefix)" if missing else ""))
    if problems:
        for msg in problems:
            print(f"error: {msg}", file=sys.stderr)
        return EXIT_DATA

    if "labeled" in sources and "dry" in sources:
        both = {r.path for r in sources["labeled"].rows} & {r.path for r in sources["dry"].rows}
        if both:
            print(
                f"warning: {len(both)} file name(s) are in both {sources['labeled'].folder} and "
                f"{sources['dry'].folder} (e.g. {sorted(both)[0]}); train_label reads the labelled copy",
                file=sys.stderr,
            )

    if args.check_videos:
        bad = [msg for s in sources.values() for msg in check_videos(s, args.backend)]
        if bad:
            for msg in bad[:50]:
                print(f"error: unreadable video {msg}", file=sys.stderr)
            print(f"error: {len(bad)} unreadable video(s); no list written", file=sys.stderr)
            return EXIT_DATA

    planned: dict[str, list[VideoRow]] = {}
    for key, (needs, keep_labels) in LISTS.items():
        if not all(s in sources for s in needs):
            continue
        rows = [r for s in needs for r in sources[s].rows]
        planned[cfg.DATA[key]] = rows if keep_labels else [VideoRow(r.path, -1) for r in rows]
    existing = [n for n in planned if os.path.exists(os.path.join(out_dir, n))]
    if existing and not args.force:
        print(
            f"error: {', '.join(existing)} already exist in {out_dir}; pass --force to overwrite (pseudo-label "
            "lists and PKLs made from the old lists refer to their row order)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    for name, rows in planned.items():
        write_video_list(os.path.join(out_dir, name), rows, args.separator)

    print(f"{'source':8s} {'videos':>7s} {'real':>6s}  folder / per-class counts")
    for name, s in sources.items():
        counts = Counter(r.label for r in s.rows)
        per_class = " ".join(f"{classes[c]}={counts[c]}" for c in sorted(counts) if c >= 0)
        print(f"{name:8s} {len(s.rows):7d} {REAL_COUNTS[name]:6d}  {s.folder}")
        if per_class:
            print(f"{'':24s}{per_class}")
    for name, rows in planned.items():
        print(f"wrote {os.path.join(out_dir, name)} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
