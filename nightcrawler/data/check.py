"""Checks every video of a list once and reports every bad one (``tools/check_videos.py``, tester pre-flight).

Each video gets one record. Its ``kind`` is ``ok`` or the first problem found, in this order:

* ``missing``: no file at the path (under any of the split's roots);
* ``empty``: the file has 0 bytes;
* ``unreadable``: the container cannot be demuxed, has no video stream or its video stream has no frames
  (:func:`~nightcrawler.data.decoders.probe_video` fails);
* ``undecodable``: the file opens with the configured backend but a real decode of the first frame, the last
  :data:`LAST_FRAMES` frames and the :data:`CHECK_INDICES` uniform indices fails;
* ``short``: it decodes, but fewer than ``min_frames`` frames (default 1) decode, or the container header
  promises more than :data:`HEADER_RATIO` times the frames that decode (a truncated file whose header still
  counts the original length; copy-cuts, whose header says a few frames more, stay ``ok``).

Checks run in a thread pool (PyAV and the other decoders release the GIL while decoding); records come back in
list order.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from nightcrawler.data.decoders import BackendUnavailableError, VideoDecodeError, open_video, probe_video
from nightcrawler.utils.io import atomic_write_text

KINDS = ("missing", "empty", "unreadable", "undecodable", "short")
CHECK_INDICES = 32  # uniform frame indices decoded per video (the largest clip the models read)
LAST_FRAMES = 2  # frames at the end decoded per video (a truncated payload fails there first)
HEADER_RATIO = 2.0  # header frame count above this many times the decodable count: "short"
REPORT_FIELDS = ("index", "name", "path", "kind", "reason", "frames", "header_frames")


@dataclass(frozen=True)
class VideoCheck:
    """The result of checking one video: ``kind`` is ``"ok"`` or one of :data:`KINDS`."""

    index: int  # position in the list
    name: str  # the list's (relative) path
    path: str  # the full path checked
    kind: str
    reason: str = ""
    frames: int = 0  # frames that decode (0 when unknown)
    header_frames: int = 0  # the container header's count (0 when absent)

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def check_indices(num_frames: int) -> list[int]:
    """Sorted unique indices decoded to check a video of ``num_frames`` frames."""
    if num_frames <= 0:
        return []
    uniform = np.linspace(0, num_frames - 1, CHECK_INDICES).round().astype(int).tolist()
    last = range(max(0, num_frames - LAST_FRAMES), num_frames)
    return sorted({0, *uniform, *last})


def check_video(
    path: str | os.PathLike,
    *,
    backend: str = "auto",
    min_frames: int = 1,
    index: int = 0,
    name: str | None = None,
) -> VideoCheck:
    """Checks one video (see the module doc); raises only :class:`BackendUnavailableError` (a set-up problem)."""
    path = os.fspath(path)
    name = path if name is None else name

    def record(kind: str, reason: str = "", frames: int = 0, header: int = 0) -> VideoCheck:
        return VideoCheck(index, name, path, kind, reason, frames, header)

    if not os.path.isfile(path):
        return record("missing", "file not found")
    try:
        if os.path.getsize(path) == 0:
            return record("empty", "the file has 0 bytes")
    except OSError as exc:
        return record("missing", f"cannot stat it ({exc})")
    try:
        probe = probe_video(path)
    except VideoDecodeError as exc:
        return record("unreadable", exc.reason)
    header = probe.header_frames
    try:
        with open_video(path, backend) as reader:
            frames = int(reader.num_frames)
            if frames > 0:
                reader.frames_at(check_indices(frames))
    except BackendUnavailableError:
        raise
    except VideoDecodeError as exc:
        return record("undecodable", exc.reason, probe.num_frames, header)
    except (OSError, RuntimeError, ValueError, IndexError) as exc:
        return record("undecodable", f"{type(exc).__name__}: {exc}", probe.num_frames, header)
    if frames < max(min_frames, 1):
        return record(
            "short", f"{frames} frame(s) decode, at least {max(min_frames, 1)} needed", frames, header
        )
    if header > HEADER_RATIO * frames:
        return record("short", f"the header counts {header} frames but only {frames} decode", frames, header)
    return record("ok", "", frames, header)


def check_videos(
    paths: Sequence[str | os.PathLike],
    names: Sequence[str] | None = None,
    *,
    backend: str = "auto",
    min_frames: int = 1,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "checking videos",
) -> list[VideoCheck]:
    """Checks every video of ``paths`` (``names``: their list paths, default the paths) in a pool of
    ``workers`` threads (default min(cpus, 8)); returns one record per video in list order."""
    paths = [os.fspath(p) for p in paths]
    names = list(paths if names is None else names)
    if len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} paths")
    workers = default_workers() if not workers else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def one(i: int) -> VideoCheck:
        return check_video(paths[i], backend=backend, min_frames=min_frames, index=i, name=names[i])

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc=desc, unit="video", dynamic_ncols=True, leave=False)
    records: list[VideoCheck] = []
    try:
        if workers == 1 or len(paths) <= 1:
            for i in range(len(paths)):
                records.append(one(i))
                if bar is not None:
                    bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check") as pool:
                for rec in pool.map(one, range(len(paths))):
                    records.append(rec)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return records


def bad_records(records: Sequence[VideoCheck]) -> list[VideoCheck]:
    return [r for r in records if not r.ok]


def summary_line(records: Sequence[VideoCheck]) -> str:
    """``"N checked, K bad (2 missing, 1 empty)"``."""
    bad = bad_records(records)
    counts = Counter(r.kind for r in bad)
    detail = ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k])
    return f"{len(records)} checked, {len(bad)} bad" + (f" ({detail})" if detail else "")


def format_table(records: Sequence[VideoCheck]) -> str:
    """One aligned table of every bad video (``name  kind  reason``); empty when all are good."""
    bad = bad_records(records)
    if not bad:
        return ""
    rows = [("video", "kind", "reason")] + [(r.name, r.kind, r.reason) for r in bad]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows) + "\n"


def write_report(records: Sequence[VideoCheck], path: str | os.PathLike) -> str:
    """Writes every record (good ones too) as CSV to ``path`` atomically; returns the path."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(REPORT_FIELDS)
    for r in records:
        writer.writerow([getattr(r, f) for f in REPORT_FIELDS])
    return os.fspath(atomic_write_text(path, buf.getvalue()))


def read_report(path: str | os.PathLike) -> list[VideoCheck]:
    """The records of a report written by :func:`write_report`."""
    with open(path, newline="") as f:
        return [
            VideoCheck(
                int(r["index"]),
                r["name"],
                r["path"],
                r["kind"],
                r["reason"],
                int(r["frames"]),
                int(r["header_frames"]),
            )
            for r in csv.DictReader(f)
        ]


class BadVideosError(VideoDecodeError):
    """Several videos of a list are bad; the message lists every one (and the report's path, when written)."""

    def __init__(
        self, records: Sequence[VideoCheck], report: str | os.PathLike | None = None, what: str = ""
    ):
        self.records = list(records)
        self.report = None if report is None else os.fspath(report)
        self.what = what
        listing = "; ".join(f"{r.name} [{r.kind}: {r.reason}]" for r in self.records)
        where = f" (report: {self.report})" if self.report else ""
        head = f"{len(self.records)} bad video(s){' in ' + what if what else ''}{where}"
        first = self.records[0].path if self.records else (self.report or "")
        super().__init__(first, f"{head}: {listing}")
        self.args = (f"{head}: {listing}",)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.records, self.report, self.what))
