"""Per-class threshold search on a labelled dark validation set (spec §9.3), vectorised over classes and grid.

For class c and threshold th the selected rows are those predicted c with confidence >= th. With s selected,
t of them truly c and R videos of class c: precision t/s, coverage s/R (what the original called "acc2"),
recall t/R, F1 = 2PR/(P+R). The original's score, ``(2*(s/R)*(t/s))/(s/R) + (t/s)``, is 3 x precision because
of operator precedence; it is reproduced for comparison, together with the original's printouts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import yaml

from nightcrawler.pseudo.io import PseudoLabelError, format_float

CRITERIA = ("f1", "original", "min_precision")


def match_ground_truth(
    names: Sequence[str], truth_map: Mapping[str, int], num_classes: int, source: str = "the ground truth"
) -> tuple[np.ndarray, np.ndarray]:
    """Looks every video up by name: (label per video, -1 when unlabelled; mask of labelled videos).

    Raises if a label is outside the classes or if no video has a label."""
    bad = [(name, label) for name, label in truth_map.items() if not 0 <= label < num_classes]
    if bad:
        raise PseudoLabelError(f"{source}: label {bad[0][1]} of '{bad[0][0]}' outside 0..{num_classes - 1}")
    truth = np.array([truth_map.get(name, -1) for name in names], dtype=np.int64)
    labelled = truth >= 0
    if not labelled.any():
        first = names[0] if len(names) else "-"
        raise PseudoLabelError(
            f"none of the {len(names)} videos is listed in {source} (first video: '{first}'); the names must "
            "match the list CSV paths"
        )
    return truth, labelled


@dataclass
class SweepTable:
    """Counts and metrics per class (rows) and threshold (columns)."""

    grid: np.ndarray  # (G,)
    selected: np.ndarray  # (C, G) s
    correct: np.ndarray  # (C, G) t
    positives: np.ndarray  # (C,) R

    def _div(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
        out = np.full(a.shape, np.nan)
        np.divide(a, b, out=out, where=b > 0)
        return out

    @property
    def precision(self) -> np.ndarray:
        return self._div(self.correct, self.selected)

    @property
    def coverage(self) -> np.ndarray:
        """s / R (the original's "acc2"; can exceed 1)."""
        return self._div(self.selected, self.positives[:, None])

    @property
    def recall(self) -> np.ndarray:
        return self._div(self.correct, self.positives[:, None])

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        out = self._div(2 * p * r, p + r)
        return np.where((self.selected > 0) & (self.positives[:, None] > 0) & np.isnan(out), 0.0, out)

    @property
    def original_metric(self) -> np.ndarray:
        """The original's expression evaluated in float64 exactly as written (nan where it would divide by 0)."""
        acc, acc2 = self.precision, self.coverage
        with np.errstate(invalid="ignore", divide="ignore"):
            return (2 * acc2 * acc) / acc2 + acc


def sweep(
    pred: np.ndarray,
    confidence: np.ndarray,
    truth: np.ndarray,
    grid: np.ndarray,
    num_classes: int,
    positives: np.ndarray | None = None,
) -> SweepTable:
    """Counts s (predicted c, confidence >= th) and t (of those, truly c) for every class and threshold.

    ``positives`` (R per class) defaults to the number of rows whose truth is c.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    confidence = np.asarray(confidence, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    selected = np.zeros((num_classes, grid.size), dtype=np.int64)
    correct = np.zeros_like(selected)
    for c in range(num_classes):
        conf_c = np.sort(confidence[pred == c])
        ok_c = np.sort(confidence[(pred == c) & (truth == c)])
        selected[c] = conf_c.size - np.searchsorted(conf_c, grid, side="left")
        correct[c] = ok_c.size - np.searchsorted(ok_c, grid, side="left")
    if positives is None:
        positives = np.bincount(truth[(truth >= 0) & (truth < num_classes)], minlength=num_classes)
    return SweepTable(grid, selected, correct, np.asarray(positives, dtype=np.int64))


@dataclass
class Choice:
    """The threshold picked for one class (index -1 and ``threshold`` = fallback when nothing qualifies)."""

    cls: int
    index: int
    threshold: float
    note: str = ""


def choose_thresholds(
    table: SweepTable, criterion: str = "f1", min_precision: float = 0.9, missing_threshold: float = 1.0
) -> list[Choice]:
    """Picks one threshold per class.

    - ``f1``: the lowest threshold with the highest F1;
    - ``original``: the original's choice: the first threshold that strictly improves the original score,
      scanning up to the first threshold that selects nothing (where the original crashes);
    - ``min_precision``: the lowest threshold whose precision reaches ``min_precision``.
    Classes with no predicted row, no positive or no qualifying threshold get ``missing_threshold``.
    """
    if criterion not in CRITERIA:
        raise PseudoLabelError(f"search criterion must be one of {CRITERIA}, got {criterion!r}")
    choices = []
    metric = {"f1": table.f1, "original": table.original_metric, "min_precision": table.precision}[criterion]
    for c in range(table.selected.shape[0]):
        if table.positives[c] == 0:
            choices.append(Choice(c, -1, missing_threshold, "no labelled video of this class"))
            continue
        valid = table.selected[c] > 0
        if criterion == "original":
            # the original's loop stops at the first empty selection (ZeroDivisionError)
            stop = int(np.argmin(valid)) if not valid.all() else valid.size
            valid = np.arange(valid.size) < stop
        values = np.where(valid, metric[c], np.nan)
        if np.all(np.isnan(values)):
            choices.append(Choice(c, -1, missing_threshold, "no video predicted as this class"))
            continue
        if criterion == "min_precision":
            ok = np.flatnonzero(values >= min_precision)
            if ok.size == 0:
                choices.append(Choice(c, -1, missing_threshold, f"precision never reaches {min_precision}"))
                continue
            idx = int(ok[0])
        else:
            idx = int(np.nanargmax(values))  # first (lowest) threshold of the best value
            if criterion == "original" and not values[idx] > 0:
                choices.append(Choice(c, -1, missing_threshold, "the original score never exceeds 0"))
                continue
        choices.append(Choice(c, idx, float(table.grid[idx])))
    return choices


def original_printout(table: SweepTable, cls: int, total_real: int) -> tuple[list[str], str | None]:
    """The lines the original search prints for class ``cls`` (with R = ``total_real``), and the error it then
    dies with (None if it would not)."""
    lines = [f"real_label_cnt {total_real}"]
    best = 0.0
    for g, th in enumerate(table.grid):
        s, t = int(table.selected[cls, g]), int(table.correct[cls, g])
        if s == 0 or total_real == 0:
            return lines, f"ZeroDivisionError at grid index {g} (th={float(th)!r}): " + (
                "no video selected" if s == 0 else "no labelled video of this class"
            )
        acc, acc2 = t / s, s / total_real
        f1 = (2 * acc2 * acc) / acc2 + acc
        if f1 > best:
            best = f1
            lines += [
                f"th: {float(th)!r}",
                f"s {s}",
                f"total number of real_label =  {t}",
                f"acc =  {acc!r}",
                f"acc2 =  {acc2!r}",
                f"F1 {f1!r}",
            ]
    return lines, None


def _tidy(v: float) -> float:
    """Grid values without linspace noise (0.46900000000000003 -> 0.469) for the YAML."""
    return float(f"{float(v):.12g}")


def _num(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def thresholds_yaml(
    choices: Sequence[Choice],
    table: SweepTable,
    criterion: str,
    header: str = "",
    class_names: Sequence[str] = (),
    extra: Mapping[str, object] | None = None,
) -> str:
    """A YAML ready for the stage scripts (``--thresholds FILE``): a ``selection`` block plus per-class detail."""
    details = []
    for ch in choices:
        g = ch.index
        row = {"class": ch.cls}
        if class_names:
            row["name"] = class_names[ch.cls]
        row["threshold"] = _tidy(ch.threshold)
        if g >= 0:
            row.update(
                selected=int(table.selected[ch.cls, g]),
                correct=int(table.correct[ch.cls, g]),
                positives=int(table.positives[ch.cls]),
                precision=_num(table.precision[ch.cls, g]),
                coverage=_num(table.coverage[ch.cls, g]),
                recall=_num(table.recall[ch.cls, g]),
                f1=_num(table.f1[ch.cls, g]),
            )
        else:
            row.update(positives=int(table.positives[ch.cls]), note=ch.note)
        details.append(row)
    doc = {
        "criterion": criterion,
        **(dict(extra) if extra else {}),
        "selection": {"method": "thresholds", "thresholds": [_tidy(ch.threshold) for ch in choices]},
        "classes": details,
    }
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)
    return (header if header.endswith("\n") or not header else header + "\n") + body


def table_csv(table: SweepTable) -> str:
    """Every (class, threshold) row of the sweep as CSV text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "class",
            "threshold",
            "selected",
            "correct",
            "positives",
            "precision",
            "coverage",
            "recall",
            "f1",
            "original_metric",
        ]
    )
    metrics = [table.precision, table.coverage, table.recall, table.f1, table.original_metric]
    for c in range(table.selected.shape[0]):
        for g, th in enumerate(table.grid):
            values = ["" if not np.isfinite(m[c, g]) else format_float(m[c, g]) for m in metrics]
            writer.writerow(
                [c, format_float(th), table.selected[c, g], table.correct[c, g], table.positives[c], *values]
            )
    return buf.getvalue()
