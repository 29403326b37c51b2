"""Reading and writing the video lists: headerless ``relative_path<SEP>label[<SEP>p0 ... p(C-1)]`` files.

Two row shapes exist: the plain lists (``path,label``) and the pseudo-label lists (``path,label,p0..p10``, one
probability per class). Every row of one file must have the same shape. The separator is normally ``","``; the
original's default is a space (any run of whitespace separates fields then). When a file does not parse with
the configured separator but does with the other one, the other one is used for the whole file, so the shipped
comma lists load whatever ``DATA.PATH_LABEL_SEPARATOR`` says.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nightcrawler.utils.io import atomic_write_text

logger = logging.getLogger(__name__)


class CsvFormatError(ValueError):
    """A video list that cannot be parsed; the message names the file and the 1-based line."""


@dataclass(frozen=True)
class VideoRow:
    """One row of a video list: path relative to a video root, integer label (-1: unknown), optional scores."""

    path: str
    label: int
    probs: tuple[float, ...] | None = None


def _split(line: str, separator: str) -> list[str]:
    if separator.strip() == "":
        return line.split()
    return [field.strip() for field in line.split(separator)]


def _other_separator(separator: str) -> str:
    return " " if separator.strip() == "," else ","


def _describe(separator: str) -> str:
    return "whitespace" if separator.strip() == "" else repr(separator)


def _expected_text(num_classes: int, separator: str, require_probs: bool) -> str:
    sep = " " if separator.strip() == "" else separator
    plain = f"'<path>{sep}<label>'"
    scored = f"'<path>{sep}<label>{sep}<p0>{sep}...{sep}<p{num_classes - 1}>'"
    if require_probs:
        return f"{scored} ({num_classes + 2} fields separated by {_describe(separator)})"
    return f"{plain} or {scored} (2 or {num_classes + 2} fields separated by {_describe(separator)})"


def _field_counts(num_classes: int, require_probs: bool) -> tuple[int, ...]:
    return (num_classes + 2,) if require_probs else (2, num_classes + 2)


def _pick_separator(lines: Sequence[tuple[int, str]], separator: str, allowed: tuple[int, ...]) -> str:
    """The configured separator, or the other common one when only that one fits the first row."""
    if not lines:
        return separator
    first = lines[0][1]
    if len(_split(first, separator)) in allowed:
        return separator
    other = _other_separator(separator)
    if len(_split(first, other)) in allowed:
        logger.debug(
            "video list uses %s instead of the configured %s", _describe(other), _describe(separator)
        )
        return other
    return separator


def parse_video_list(
    csv_path: str | os.PathLike,
    *,
    num_classes: int,
    separator: str = ",",
    require_label: bool = False,
    require_probs: bool = False,
) -> list[VideoRow]:
    """Reads a headerless video list.

    Args:
        csv_path: the file.
        num_classes: number of classes C; labels must lie in [-1, C) (``[0, C)`` with ``require_label``) and
            rows with scores must carry exactly C of them.
        separator: field separator (``","`` or ``" "``; the other one is accepted for a whole file, see module).
        require_label: reject the unknown label -1 (training lists).
        require_probs: every row must carry the C scores (pseudo-label lists written by the generators).

    Raises:
        FileNotFoundError: the file does not exist (the message names the path).
        CsvFormatError: a malformed row (file, 1-based line number, what was expected) or an empty file.
    """
    path = os.fspath(csv_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video list not found: {path}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    with open(path, encoding="utf-8-sig") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
    if not lines:
        raise CsvFormatError(f"{path}: the video list is empty (expected one '<path>,<label>' row per video)")

    allowed = _field_counts(num_classes, require_probs)
    sep = _pick_separator(lines, separator, allowed)
    low = 0 if require_label else -1
    rows: list[VideoRow] = []
    width: int | None = None
    first_line: dict[str, int] = {}
    for line_no, line in lines:
        where = f"{path}:{line_no}"
        fields = _split(line, sep)
        if len(fields) not in allowed:
            raise CsvFormatError(
                f"{where}: expected {_expected_text(num_classes, sep, require_probs)}, "
                f"got {len(fields)} field(s): {line!r}"
            )
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise CsvFormatError(
                f"{where}: expected {width} fields like the first row of the file, got {len(fields)}: {line!r}"
            )
        rel_path, label_text = fields[0], fields[1]
        if not rel_path:
            raise CsvFormatError(f"{where}: empty video path: {line!r}")
        try:
            label = int(label_text)
        except ValueError:
            raise CsvFormatError(
                f"{where}: label must be an integer in [{low}, {num_classes}), got {label_text!r}"
            ) from None
        if not low <= label < num_classes:
            raise CsvFormatError(f"{where}: label must be in [{low}, {num_classes}), got {label}")
        probs: tuple[float, ...] | None = None
        if len(fields) > 2:
            try:
                probs = tuple(float(v) for v in fields[2:])
            except ValueError:
                raise CsvFormatError(
                    f"{where}: class scores p0..p{num_classes - 1} must be numbers, got {fields[2:]!r}"
                ) from None
            if not all(math.isfinite(p) for p in probs):
                raise CsvFormatError(f"{where}: class scores must be finite, got {fields[2:]!r}")
        if rel_path in first_line:  # one video, one label: a repeated row is a merge or copy mistake
            raise CsvFormatError(
                f"{where}: video {rel_path!r} is already listed on line {first_line[rel_path]}"
            )
        first_line[rel_path] = line_no
        rows.append(VideoRow(rel_path, label, probs))
    return rows


def format_video_list(rows: Iterable[VideoRow], separator: str = ",") -> str:
    """The text of a video list (one row per line, scores with full float precision)."""
    out = []
    for row in rows:
        if separator in row.path or (separator.strip() == "" and any(c.isspace() for c in row.path)):
            raise ValueError(f"video path {row.path!r} contains the separator {separator!r}")
        fields = [row.path, str(int(row.label))]
        if row.probs is not None:
            fields.extend(repr(float(p)) for p in row.probs)
        out.append(separator.join(fields) + "\n")
    return "".join(out)


def write_video_list(path: str | os.PathLike, rows: Iterable[VideoRow], separator: str = ",") -> None:
    """Writes a video list atomically."""
    atomic_write_text(path, format_video_list(rows, separator))


def natural_sort_key(path: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``2.mp4`` before ``10.mp4``), case-insensitively."""
    parts = re.split(r"(\d+)", path)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p)


VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")


def is_video_file(name: str) -> bool:
    """Whether a file name has a video suffix (case-insensitive) and is not hidden (``._x.mp4`` resource forks)."""
    base = os.path.basename(name)
    return base.lower().endswith(VIDEO_SUFFIXES) and not base.startswith(".")


def list_videos(folder: str | os.PathLike) -> list[str]:
    """Video files under ``folder`` (recursive), as sorted paths relative to it; raises when there are none."""
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"video folder not found: {root}")
    found = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
        if is_video_file(f)
    )
    if not found:
        raise ValueError(f"{root}: no video files ({', '.join(VIDEO_SUFFIXES)}) found")
    return found
