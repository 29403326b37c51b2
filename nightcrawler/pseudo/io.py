"""PKL / CSV readers and writers for pseudo labelling and voting (numpy only, no model code).

A PKL is a pickle of a dict with ``video_preds`` (N x C float), ``video_labels`` (N,) and, when written by our
tester, ``video_names`` (N,) holding the list-CSV relative paths. The original's PKLs carry no names; their
rows pair with the lines of the list CSV by position, so they are accepted only together with such a CSV.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nightcrawler.utils.io import atomic_write_text


def pkl_file_name(split: str, frames: int, crop: int, views: int, crops: int, suffix: str = "") -> str:
    """``{split}x{frames}x{crop}x{views}x{crops}{suffix}.pkl``: the tester's PKL name (the original's formula)."""
    return f"{split}x{frames}x{crop}x{views}x{crops}{suffix}.pkl"


def write_pkl(path: str | os.PathLike, preds: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> None:
    """Writes a PKL (``video_preds`` float32, ``video_labels`` int64, ``video_names``) atomically."""
    from nightcrawler.utils.io import atomic_pickle_dump

    atomic_pickle_dump(
        {
            "video_preds": np.asarray(preds, dtype=np.float32),
            "video_labels": np.asarray(labels).astype(np.int64),
            "video_names": list(names),
        },
        path,
    )


class PseudoLabelError(ValueError):
    """Bad input to pseudo labelling, search or voting; the message names the file or key at fault."""


# Globals a PKL of numpy arrays, lists and strings may reference; anything else (code objects, torch tensors,
# arbitrary callables) is refused instead of being executed by the unpickler.
_SAFE_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if (module, name) in _SAFE_GLOBALS or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a PKL may only hold numpy arrays and lists"
        )


@dataclass(frozen=True)
class ModelOutput:
    """The per-video scores of one model as read from its PKL."""

    path: Path
    preds: np.ndarray  # (N, C) float32
    labels: np.ndarray  # (N,) int64
    names: tuple[str, ...] | None  # list-CSV relative paths, None for the original's PKLs

    @property
    def num_videos(self) -> int:
        return int(self.preds.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.preds.shape[1])


def load_pkl(path: str | os.PathLike, num_classes: int | None = None) -> ModelOutput:
    """Reads and checks one test PKL (shape, class count, label/name lengths, finite scores)."""
    path = Path(path)
    if not path.is_file():
        raise PseudoLabelError(f"PKL not found: {path}")
    try:
        with open(path, "rb") as f:
            data = _NumpyOnlyUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as exc:
        raise PseudoLabelError(f"cannot read PKL {path}: {exc}") from exc
    if not isinstance(data, Mapping) or "video_preds" not in data:
        raise PseudoLabelError(f"PKL {path}: expected a dict with key 'video_preds' (and 'video_labels')")
    preds = np.asarray(data["video_preds"])
    if preds.ndim != 2 or not np.issubdtype(preds.dtype, np.number):
        raise PseudoLabelError(
            f"PKL {path}: 'video_preds' must be a numeric N x C array, got shape {preds.shape}"
        )
    if num_classes is not None and preds.shape[1] != num_classes:
        raise PseudoLabelError(
            f"PKL {path}: 'video_preds' has {preds.shape[1]} classes, expected {num_classes}"
        )
    if not np.all(np.isfinite(preds)):
        bad = int(np.flatnonzero(~np.isfinite(preds).all(axis=1))[0])
        raise PseudoLabelError(f"PKL {path}: 'video_preds' row {bad} holds NaN or infinite values")
    n = preds.shape[0]
    labels = np.asarray(data.get("video_labels", np.full(n, -1)))
    if labels.shape != (n,):
        raise PseudoLabelError(f"PKL {path}: 'video_labels' has shape {labels.shape}, expected ({n},)")
    names = None
    if data.get("video_names") is not None:
        raw = list(data["video_names"])
        if len(raw) != n:
            raise PseudoLabelError(f"PKL {path}: {len(raw)} 'video_names' for {n} rows of 'video_preds'")
        names = tuple(str(x) for x in raw)
        _check_unique(names, f"PKL {path} ('video_names')")
    return ModelOutput(path, preds.astype(np.float32, copy=False), labels.astype(np.int64), names)


def _check_unique(names: Sequence[str], where: str) -> None:
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(x for x in names if x in seen or seen.add(x))
        raise PseudoLabelError(f"{where}: video '{dup}' appears more than once")


def read_video_list(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Reads a headerless ``name,label`` list: returns (names, label fields), the text before/after the 1st comma."""
    path = Path(path)
    if not path.is_file():
        raise PseudoLabelError(f"list CSV not found: {path}")
    names, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            name, _, rest = line.partition(",")
            if not name:
                raise PseudoLabelError(f"{path} line {lineno}: empty video name in {line!r}")
            names.append(name)
            labels.append(rest.split(",", 1)[0].strip())
    if not names:
        raise PseudoLabelError(f"list CSV {path} is empty")
    return names, labels


def read_labelled_list(path: str | os.PathLike) -> dict[str, int]:
    """Reads a ``name,label`` ground-truth CSV into a name -> integer label mapping."""
    names, fields = read_video_list(path)
    out: dict[str, int] = {}
    for i, (name, field) in enumerate(zip(names, fields)):
        try:
            label = int(field)
        except ValueError:
            raise PseudoLabelError(f"{path} row {i}: label {field!r} of '{name}' is not an integer") from None
        if name in out and out[name] != label:
            raise PseudoLabelError(
                f"{path}: video '{name}' appears twice with labels {out[name]} and {label}"
            )
        out[name] = label
    return out


@dataclass(frozen=True)
class AlignedOutputs:
    """Scores of several models over the same videos in the same row order."""

    names: tuple[str, ...]
    preds: dict[str, np.ndarray]  # role -> (N, C) float32
    paths: dict[str, Path]

    @property
    def num_videos(self) -> int:
        return len(self.names)


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"row {i}: '{x}' vs '{y}'"
    return f"row {min(len(a), len(b))}: one list ends ({len(a)} vs {len(b)} videos)"


def _set_difference_text(label_a: str, a: Sequence[str], label_b: str, b: Sequence[str]) -> str:
    only_a = [x for x in a if x not in set(b)]
    only_b = [x for x in b if x not in set(a)]
    parts = []
    if only_a:
        parts.append(f"{len(only_a)} only in {label_a} (first: '{only_a[0]}')")
    if only_b:
        parts.append(f"{len(only_b)} only in {label_b} (first: '{only_b[0]}')")
    return "; ".join(parts)


def align_outputs(
    outputs: Mapping[str, ModelOutput],
    order: Sequence[str] | None = None,
    order_source: str = "the list CSV",
    allow_extra: bool = False,
) -> AlignedOutputs:
    """Puts several models' rows into one order, checking that they describe the same videos.

    PKLs with names are aligned by name: to ``order`` when given, else to the first named PKL. PKLs without
    names need ``order`` (the list CSV they were made from) and pair with it by position, as in the original.
    ``allow_extra`` lets named PKLs hold videos that ``order`` does not list (they are dropped).
    """
    if not outputs:
        raise PseudoLabelError("no model outputs given")
    classes = {role: out.num_classes for role, out in outputs.items()}
    if len(set(classes.values())) > 1:
        detail = ", ".join(f"{outputs[r].path} has {c}" for r, c in classes.items())
        raise PseudoLabelError(f"PKLs disagree on the number of classes: {detail}")
    named = [role for role, out in outputs.items() if out.names is not None]
    unnamed = [role for role in outputs if role not in named]
    if order is None:
        if unnamed:
            raise PseudoLabelError(
                f"PKL {outputs[unnamed[0]].path} has no 'video_names'; give {order_source} its rows were "
                "made from (rows pair with the list's lines by position)"
            )
        ref_role = named[0]
        reference = outputs[ref_role].names
        ref_label = f"PKL {outputs[ref_role].path}"
    else:
        reference = tuple(order)
        _check_unique(reference, order_source)
        ref_label = order_source
    preds: dict[str, np.ndarray] = {}
    for role, out in outputs.items():
        if out.names is None:
            if out.num_videos != len(reference):
                raise PseudoLabelError(
                    f"PKL {out.path} has {out.num_videos} rows but {ref_label} lists {len(reference)} videos"
                )
            preds[role] = out.preds
            continue
        if out.names == reference:
            preds[role] = out.preds
            continue
        index = {name: i for i, name in enumerate(out.names)}
        missing = [name for name in reference if name not in index]
        extra = len(out.names) - (len(reference) - len(missing))
        if missing or (extra and not allow_extra):
            raise PseudoLabelError(
                f"PKL {out.path} and {ref_label} do not hold the same videos: first difference at "
                f"{_first_difference(reference, out.names)}; "
                f"{_set_difference_text(ref_label, reference, 'the PKL', out.names)}"
            )
        preds[role] = out.preds[[index[name] for name in reference]]
    return AlignedOutputs(tuple(reference), preds, {role: out.path for role, out in outputs.items()})


def format_float(value: float) -> str:
    """Shortest text that reads back to the same float64 (Python's repr, as pandas writes)."""
    return repr(float(value))


def format_float32(value: float) -> str:
    """Shortest text that reads back to the same float32 value."""
    return np.format_float_positional(np.float32(value), unique=True, trim="0")


def write_pseudo_csv(
    path: str | os.PathLike, names: Sequence[str], labels: np.ndarray, probs: np.ndarray
) -> Path:
    """Writes the original's pseudo-label CSV atomically: no header, ``name,label,p0..pC-1``, ``\\n`` endings."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for name, label, row in zip(names, labels, probs):
        writer.writerow([name, int(label), *(format_float(v) for v in row)])
    return atomic_write_text(path, buf.getvalue())


def read_pseudo_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Reads a pseudo-label CSV back: (names, labels (N,), probabilities (N, C) float64)."""
    path = Path(path)
    if not path.is_file():
        raise PseudoLabelError(f"pseudo-label CSV not found: {path}")
    names, labels, probs = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) < 3 or (probs and len(row) - 2 != len(probs[0])):
                raise PseudoLabelError(
                    f"{path} line {lineno}: expected name,label,p0..pC-1, got {len(row)} fields"
                )
            try:
                labels.append(int(row[1]))
                probs.append([float(x) for x in row[2:]])
            except ValueError as exc:
                raise PseudoLabelError(f"{path} line {lineno}: {exc}") from None
            names.append(row[0])
    if not names:
        raise PseudoLabelError(f"pseudo-label CSV {path} is empty (expected name,label,p0..pC-1 rows)")
    _check_unique(names, f"pseudo-label CSV {path}")
    num_classes = len(probs[0])
    return (
        names,
        np.asarray(labels, dtype=np.int64),
        np.asarray(probs, dtype=np.float64).reshape(-1, num_classes),
    )
