"""A short report beside a pseudo-label (or submission) CSV: per-class counts, mean confidence, a PNG chart."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nightcrawler.utils.io import atomic_open, atomic_write_text


@dataclass(frozen=True)
class ClassRow:
    """Counts for one class."""

    cls: int
    name: str
    predicted: int  # rows whose label is this class
    kept: int  # of those, rows kept
    mean_confidence: float  # mean confidence of the kept rows (nan if none)
    threshold: float | None  # the class threshold, None when not a fixed per-class value


def class_summary(
    labels: np.ndarray,
    confidence: np.ndarray,
    keep: np.ndarray,
    num_classes: int,
    limits: np.ndarray | None = None,
    class_names: Sequence[str] = (),
) -> list[ClassRow]:
    """Per-class counts and mean confidence of the kept rows."""
    labels = np.asarray(labels)
    confidence = np.asarray(confidence, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    rows = []
    for c in range(num_classes):
        mask = labels == c
        kept = mask & keep
        threshold = None
        if limits is not None and mask.any():
            values = np.unique(np.asarray(limits)[mask])
            if values.size == 1 and np.isfinite(values[0]):
                threshold = float(values[0])
        rows.append(
            ClassRow(
                c,
                class_names[c] if c < len(class_names) else str(c),
                int(mask.sum()),
                int(kept.sum()),
                float(confidence[kept].mean()) if kept.any() else float("nan"),
                threshold,
            )
        )
    return rows


def summary_markdown(rows: Sequence[ClassRow], title: str) -> str:
    """The report as a Markdown table with a total line."""
    total_pred = sum(r.predicted for r in rows)
    total_kept = sum(r.kept for r in rows)
    lines = [
        f"# {title}",
        "",
        "| class | name | predicted | kept | kept % | mean confidence (kept) | threshold |",
    ]
    lines.append("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        pct = f"{100.0 * r.kept / r.predicted:.1f}" if r.predicted else "-"
        conf = f"{r.mean_confidence:.4f}" if np.isfinite(r.mean_confidence) else "-"
        thr = f"{r.threshold:.3f}" if r.threshold is not None else "-"
        lines.append(f"| {r.cls} | {r.name} | {r.predicted} | {r.kept} | {pct} | {conf} | {thr} |")
    lines.append(
        f"| all | | {total_pred} | {total_kept} | "
        f"{(100.0 * total_kept / total_pred) if total_pred else 0:.1f} | | |"
    )
    return "\n".join(lines) + "\n"


def summary_csv(rows: Sequence[ClassRow]) -> str:
    """The report as CSV."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "name", "predicted", "kept", "mean_confidence", "threshold"])
    for r in rows:
        writer.writerow(
            [
                r.cls,
                r.name,
                r.predicted,
                r.kept,
                "" if not np.isfinite(r.mean_confidence) else f"{r.mean_confidence:.6f}",
                "" if r.threshold is None else repr(r.threshold),
            ]
        )
    return buf.getvalue()


def bar_chart(path: str | os.PathLike, rows: Sequence[ClassRow], title: str) -> Path:
    """PNG bar chart: kept and rejected rows per class, mean confidence written above each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    kept = np.array([r.kept for r in rows])
    rejected = np.array([r.predicted - r.kept for r in rows])
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.bar(x, kept, color="tab:blue", label="kept")
    if rejected.any():
        ax.bar(x, rejected, bottom=kept, color="tab:gray", alpha=0.5, label="rejected")
    for xi, r in zip(x, rows):
        if np.isfinite(r.mean_confidence):
            ax.text(xi, r.predicted, f"{r.mean_confidence:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [r.name for r in rows], rotation=45, ha="right")
    ax.set_ylabel("videos")
    ax.set_title(f"{title} (numbers: mean confidence of kept rows)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return Path(path)


def report_paths(csv_path: str | os.PathLike) -> dict[str, Path]:
    """Where the report files of ``csv_path`` go: ``<stem>_report.{md,csv,png}`` beside it."""
    p = Path(csv_path)
    return {ext: p.with_name(f"{p.stem}_report.{ext}") for ext in ("md", "csv", "png")}


def write_report(
    csv_path: str | os.PathLike, rows: Sequence[ClassRow], title: str, chart: bool = True
) -> dict[str, Path]:
    """Writes the Markdown and CSV summaries and (optionally) the PNG chart beside ``csv_path``."""
    paths = report_paths(csv_path)
    atomic_write_text(paths["md"], summary_markdown(rows, title))
    atomic_write_text(paths["csv"], summary_csv(rows))
    if chart:
        bar_chart(paths["png"], rows, title)
    else:
        paths.pop("png")
    return paths
