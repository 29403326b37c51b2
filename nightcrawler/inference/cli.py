"""Classify videos with trained models: top-k classes per video, printed and written as JSON or CSV.

    nightcrawler-predict --cfg CONFIG --checkpoint FILE PATH [PATH ...] [--views V --crops C]
                         [--enhance SPEC] [--topk K] [--json OUT | --csv OUT] [--device cpu|cuda]

(``python tools/predict.py`` is the same tool.) A PATH is a video or a folder (searched recursively for
.mp4/.avi/.mkv/.mov/.webm/.m4v). Clips are made as the tester makes them (TEST.NUM_ENSEMBLE_VIEWS x
NUM_SPATIAL_CROPS, the configured enhancement, gamma 0.25 in the experiment configs) unless --views, --crops
or --enhance say otherwise. Several --checkpoint options (each after its own --cfg, or all with one --cfg) are
fused by averaging their probabilities. Videos that cannot be read are named at the end, with the reason;
the others are still classified and written (exit code 3 then, 0 when every video was classified); --strict
stops before writing anything instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from collections.abc import Sequence

from nightcrawler.utils.cli import run_cli
from nightcrawler.utils.errors import EXIT_DATA, EXIT_OK


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="nightcrawler-predict",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="video files or folders of videos")
    p.add_argument(
        "--cfg", action="append", required=True, help="experiment / model config YAML (repeat per model)"
    )
    p.add_argument(
        "--checkpoint", action="append", required=True, help="trained weights (.pyth; repeat per model)"
    )
    p.add_argument("--views", type=int, default=None, help="temporal views (default TEST.NUM_ENSEMBLE_VIEWS)")
    p.add_argument(
        "--crops",
        type=int,
        default=None,
        choices=(1, 3),
        help="spatial crops (default TEST.NUM_SPATIAL_CROPS)",
    )
    p.add_argument(
        "--enhance",
        default=None,
        help="enhancement spec, e.g. 'gamma:value=0.25' or 'none' (default ENHANCE.TEST)",
    )
    p.add_argument("--topk", type=int, default=5, help="classes reported per video (default 5)")
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--json", metavar="OUT", help="write [{video, topk: [{class, prob}], probs, error}] here"
    )
    out.add_argument(
        "--csv", metavar="OUT", help="write one row per video (top class, its probability, every class's)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="videos per forward batch (default from TEST.BATCH_SIZE)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding worker processes (default: DATA_LOADER.NUM_WORKERS, resolved per machine when it is -1)",
    )
    p.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="config override for every model (repeat)",
    )
    p.add_argument("--strict", action="store_true", help="stop with an error naming every unreadable video")
    p.add_argument("--quiet", action="store_true", help="no per-video lines and no progress bar")
    args = p.parse_args(argv)
    if len(args.cfg) not in (1, len(args.checkpoint)):
        p.error(
            f"give one --cfg for all checkpoints or one per --checkpoint (got {len(args.cfg)} for {len(args.checkpoint)})"
        )
    if args.topk < 1 or (args.views is not None and args.views < 1):
        p.error("--topk and --views must be >= 1")
    return args


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Videos named by ``paths``: files as given (a missing one too: it is reported with the others), folders
    replaced by the videos under them (sorted); a folder without any video is an error."""
    from nightcrawler.config import ConfigError
    from nightcrawler.data.csvs import list_videos

    videos: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            try:
                videos += [os.path.join(path, name) for name in list_videos(path)]
            except ValueError as exc:  # a folder argument holding no video: a command-line error
                raise ConfigError(f"PATH argument {exc}") from None
        else:
            videos.append(path)
    return list(dict.fromkeys(videos))


def predictions_json(predictions) -> str:
    rows = [
        {
            "video": p.video,
            "topk": [{"class": name, "prob": round(prob, 6)} for name, prob in p.topk],
            "probs": None if not p.ok else [round(float(x), 6) for x in p.probs],
            "error": p.error,
        }
        for p in predictions
    ]
    return json.dumps(rows, indent=1) + "\n"


def predictions_csv(predictions, class_names: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "class", "prob", "error", *class_names])
    for p in predictions:
        if p.ok:
            name, prob = p.topk[0]
            writer.writerow([p.video, name, f"{prob:.6f}", "", *(f"{x:.6f}" for x in p.probs)])
        else:
            writer.writerow([p.video, "", "", p.error, *([""] * len(class_names))])
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the tool; user errors end in one paragraph and their exit code (nightcrawler.utils.errors)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    from nightcrawler.inference.recognizer import Recognizer, average_predictions
    from nightcrawler.utils.io import atomic_write_text

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    videos = expand_paths(args.paths)
    cfgs = args.cfg * len(args.checkpoint) if len(args.cfg) == 1 else args.cfg
    opts = [item for pair in args.set for item in pair]
    runs, recognizers = [], []
    for cfg_path, checkpoint in zip(cfgs, args.checkpoint):
        recognizer = Recognizer.from_config(
            cfg_path,
            checkpoint,
            device=args.device,
            opts=opts,
            views=args.views,
            crops=args.crops,
            enhancement=args.enhance,
            topk=args.topk,
        )
        if recognizers and recognizer.class_names != recognizers[0].class_names:
            raise ValueError(
                f"{cfg_path} has other classes than {cfgs[0]}: their probabilities cannot be averaged"
            )
        recognizers.append(recognizer)
        runs.append(
            recognizer.predict_many(
                videos,
                batch_size=args.batch_size,
                num_workers=args.workers,
                strict=args.strict,
                progress=not args.quiet,
            )
        )
    names = recognizers[0].class_names
    predictions = runs[0] if len(runs) == 1 else average_predictions(runs, args.topk, names)
    if args.json:
        atomic_write_text(args.json, predictions_json(predictions))
    if args.csv:
        atomic_write_text(args.csv, predictions_csv(predictions, names))
    if not args.quiet:
        for p in predictions:
            shown = ", ".join(f"{name} {prob:.3f}" for name, prob in p.topk) if p.ok else f"[{p.error}]"
            print(f"{p.video}: {shown}")
    failed = [p for p in predictions if not p.ok]
    done = len(predictions) - len(failed)
    fused = f", {len(runs)} models averaged" if len(runs) > 1 else ""
    print(f"{done} of {len(predictions)} videos classified{fused}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} video(s) could not be read:", file=sys.stderr)
        for p in failed:
            print(f"  {p.video}: {p.error}", file=sys.stderr)
        return EXIT_DATA
    return EXIT_OK
