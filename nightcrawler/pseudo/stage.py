"""One pseudo-label stage: read the models' PKLs, fuse, select, write the CSV (spec §9)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nightcrawler.pseudo.config import StageConfig
from nightcrawler.pseudo.fuse import FusionResult, FusionSpec, fuse_predictions
from nightcrawler.pseudo.io import (
    AlignedOutputs,
    PseudoLabelError,
    align_outputs,
    format_float,
    load_pkl,
    read_video_list,
    write_pseudo_csv,
)
from nightcrawler.pseudo.thresholds import SelectionSpec, row_thresholds, select_rows
from nightcrawler.utils.io import atomic_write_text


@dataclass
class PseudoLabels:
    """Fused scores, labels and the keep decision for every video of the list."""

    names: tuple[str, ...]
    fusion: FusionResult
    labels: np.ndarray  # (N,) argmax of the fused scores
    confidence: np.ndarray  # (N,) max of the fused scores
    limits: np.ndarray  # (N,) threshold each row was compared with
    keep: np.ndarray  # (N,) bool

    @property
    def num_classes(self) -> int:
        return int(self.fusion.fused.shape[1])


def generate_pseudo_labels(
    aligned: AlignedOutputs, fusion: FusionSpec, selection: SelectionSpec
) -> PseudoLabels:
    """Fuses the aligned model outputs and applies the selection rule."""
    result = fuse_predictions(aligned.preds, fusion)
    labels, confidence = result.labels, result.confidence
    num_classes = result.fused.shape[1]
    limits = row_thresholds(labels, confidence, selection, num_classes)
    keep = select_rows(labels, confidence, selection, num_classes)
    return PseudoLabels(aligned.names, result, labels, confidence, limits, keep)


def resolve_pkl_paths(
    cfg: StageConfig,
    root: str | os.PathLike,
    overrides: Mapping[str, str | os.PathLike] | None = None,
    pkl_name: str | None = None,
    same_pkl_as: Mapping[str, str] | None = None,
    model_dirs: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Role -> PKL path: ``root/<model dir>/<pkl name>`` (``model_dirs`` replaces a role's folder), explicit
    ``overrides`` (role -> file), then slot substitutions (``same_pkl_as``: slot -> role)."""
    root = Path(root)
    overrides, model_dirs = dict(overrides or {}), dict(model_dirs or {})
    unknown = [role for role in [*overrides, *model_dirs] if role not in cfg.models]
    if unknown:
        raise PseudoLabelError(
            f"{cfg.source}: no model role(s) {unknown}; the config lists {sorted(cfg.models)}"
        )
    paths = {}
    for role, model in cfg.models.items():
        if role in overrides:
            paths[role] = Path(overrides[role])
        elif role in model_dirs:
            paths[role] = root / model_dirs[role] / (model.pkl_name or pkl_name or cfg.pkl_name)
        else:
            paths[role] = model.resolve(root, pkl_name or cfg.pkl_name)
    for slot, role in {**cfg.same_pkl_as, **(same_pkl_as or {})}.items():
        if slot not in paths or role not in paths:
            raise PseudoLabelError(
                f"same-PKL substitution {slot}={role}: both must be model roles of {cfg.source}"
            )
        paths[slot] = paths[role]
    return paths


def load_aligned(
    paths: Mapping[str, Path],
    num_classes: int,
    list_csv: str | os.PathLike | None = None,
    skip_rows: int = 0,
    allow_extra: bool = False,
) -> AlignedOutputs:
    """Loads the PKLs and aligns them (by name, or by position with the list CSV for PKLs without names).

    ``skip_rows`` drops that many leading rows of every PKL first (the original's ARID offset).
    """
    outputs = {}
    for role, path in paths.items():
        out = load_pkl(path, num_classes)
        if skip_rows:
            if skip_rows >= out.num_videos:
                raise PseudoLabelError(f"PKL {path}: cannot skip {skip_rows} rows of {out.num_videos}")
            names = None if out.names is None else out.names[skip_rows:]
            out = replace(out, preds=out.preds[skip_rows:], labels=out.labels[skip_rows:], names=names)
        outputs[role] = out
    order = None
    source = "the list CSV (--list)"
    if list_csv is not None:
        order, _ = read_video_list(list_csv)
        source = f"list CSV {list_csv}"
    return align_outputs(outputs, order, source, allow_extra=allow_extra)


def run_stage(
    cfg: StageConfig,
    paths: Mapping[str, Path],
    list_csv: str | os.PathLike | None,
    selection: SelectionSpec | None = None,
) -> PseudoLabels:
    """Loads, aligns, fuses and selects for one stage config."""
    aligned = load_aligned(paths, cfg.num_classes, list_csv)
    return generate_pseudo_labels(aligned, cfg.fusion, selection or cfg.selection)


def write_stage_csv(path: str | os.PathLike, result: PseudoLabels) -> Path:
    """Writes the kept rows in list order (original format: no header, name, label, fused scores)."""
    keep = result.keep
    names = [n for n, k in zip(result.names, keep) if k]
    return write_pseudo_csv(path, names, result.labels[keep], result.fusion.fused[keep])


def write_decisions(path: str | os.PathLike, result: PseudoLabels, fusion: FusionSpec) -> Path:
    """Per-row explanation: argmax of every model a rule looks at, rule used, label, confidence, limit, kept."""
    rule_models = list(dict.fromkeys(rule.model for rule in fusion.rules))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "row",
            "id",
            *(f"{m}_argmax" for m in rule_models),
            "rule",
            "label",
            "confidence",
            "threshold",
            "kept",
        ]
    )
    model_argmax = {m: np.argmax(result.fusion.inputs[m], axis=1) for m in rule_models}
    for i, name in enumerate(result.names):
        writer.writerow(
            [
                i,
                name,
                *(int(model_argmax[m][i]) for m in rule_models),
                int(result.fusion.branch[i]),
                int(result.labels[i]),
                format_float(result.confidence[i]),
                format_float(result.limits[i]),
                int(result.keep[i]),
            ]
        )
    return atomic_write_text(path, buf.getvalue())
