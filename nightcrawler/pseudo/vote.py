"""The final ensemble (spec §10): per-mode fusion and post-processing passes, a vote across modes, and the
submission files. Rules and weights come from ``configs/ensemble/*.yaml``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nightcrawler.pseudo.config import EnsembleConfig, ModeSpec, ReassignRule
from nightcrawler.pseudo.fuse import FusionResult, fuse_predictions, softmax
from nightcrawler.pseudo.io import (
    PseudoLabelError,
    align_outputs,
    format_float,
    format_float32,
    load_pkl,
    read_video_list,
)
from nightcrawler.utils.io import atomic_write_text

PROBABILITY_FORMATS = ("columns", "torch")


@dataclass
class RuleOutcome:
    """What the post-processing passes did."""

    pred: np.ndarray  # (N,) final classes
    times_changed: np.ndarray  # (N,) how many passes rewrote each row
    hits: dict[str, int] = field(default_factory=dict)  # "passI: a->b (condition)" -> rows


def rule_key(index: int, rule: ReassignRule, to: int, min_prob: float) -> str:
    """Readable name of one branch of one pass, e.g. ``pass0: 10->2 (p[10]<=0.84 and p[2]>=0.2)``."""
    return f"pass{index}: {rule.pred}->{to} (p[{rule.prob_of}]<={rule.at_most!r} and p[{to}]>={min_prob!r})"


def apply_reassign(pred: np.ndarray, probs: np.ndarray, rules: Sequence[ReassignRule]) -> RuleOutcome:
    """Runs the passes in order. In a pass, rows whose current class is ``rule.pred`` and whose
    ``P[rule.prob_of] <= rule.at_most`` move to the first branch class ``to`` with ``P[to] >= min_prob``.
    Probabilities never change; a later pass sees the classes an earlier pass wrote."""
    current = np.array(pred, dtype=np.int64, copy=True)
    times = np.zeros(current.shape, dtype=np.int64)
    hits: dict[str, int] = {}
    for i, rule in enumerate(rules):
        eligible = (current == rule.pred) & (probs[:, rule.prob_of] <= rule.at_most)
        done = np.zeros_like(eligible)
        updated = current.copy()
        for to, min_prob in rule.branches:
            hit = eligible & ~done & (probs[:, to] >= min_prob)
            if hit.any():
                hits[rule_key(i, rule, to, min_prob)] = int(hit.sum())
            updated[hit] = to
            done |= hit
        times += done
        current = updated
    return RuleOutcome(current, times, hits)


@dataclass
class ModeResult:
    """Everything one ensemble mode produced."""

    name: str
    fusion: FusionResult
    argmax: np.ndarray  # (N,) argmax after replacements, before the passes
    final_pred: np.ndarray  # (N,) after the passes
    probability: np.ndarray  # (N, C) the numbers written beside the class
    rules: RuleOutcome


def output_probability(fused: np.ndarray, kind: str) -> np.ndarray:
    """The probabilities written to the files: the original's softmax of the fused row (float64, cast to
    float32), the fused row itself, or the fused row divided by its sum."""
    if kind == "softmax_of_fused":
        return softmax(fused, np.float32)
    if kind == "fused":
        return np.asarray(fused, dtype=np.float64)
    if kind == "normalised_fused":
        return fused / fused.sum(axis=1, keepdims=True)
    raise PseudoLabelError(f"unknown output probability {kind!r}")


def run_mode(
    mode: ModeSpec, scores: Mapping[str, np.ndarray], probability: str = "softmax_of_fused"
) -> ModeResult:
    """Fuses one mode's inputs (role -> PKL rows), then applies its passes."""
    fusion = fuse_predictions(scores, mode.fusion)
    argmax = fusion.labels
    outcome = apply_reassign(argmax, fusion.fused, mode.reassign)
    return ModeResult(
        mode.name, fusion, argmax, outcome.pred, output_probability(fusion.fused, probability), outcome
    )


def vote_original(preds: Sequence[np.ndarray], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The original vote: most frequent class per row, ties to the smaller class id. Returns the voted class and
    the index of the first voter holding it (whose row the original copies)."""
    stacked = np.stack([np.asarray(p, dtype=np.int64) for p in preds])  # (V, N)
    counts = np.zeros((stacked.shape[1], num_classes), dtype=np.int64)
    for row in stacked:
        counts[np.arange(row.size), row] += 1
    voted = np.argmax(counts, axis=1)
    source = np.argmax(stacked == voted[None, :], axis=0)
    return voted, source


def vote_majority(
    preds: Sequence[np.ndarray], fused: Sequence[np.ndarray], num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority over the voters; a tie goes to the tied class with the largest summed probability (each voter's
    fused row divided by its sum, so the original's 0.3-scale Sit/Stand rows weigh like the others), then to the
    smaller id. Returns (class, vote count of the class, mean normalised probability (N, C))."""
    stacked = np.stack([np.asarray(p, dtype=np.int64) for p in preds])
    counts = np.zeros((stacked.shape[1], num_classes), dtype=np.int64)
    for row in stacked:
        counts[np.arange(row.size), row] += 1
    mean_prob = np.mean([f / f.sum(axis=1, keepdims=True) for f in fused], axis=0)
    tied = counts == counts.max(axis=1, keepdims=True)
    voted = np.argmax(np.where(tied, mean_prob, -np.inf), axis=1)
    return voted, counts[np.arange(voted.size), voted], mean_prob


def format_torch_row(values: Sequence[float], precision: int = 4, linewidth: int = 80) -> str:
    """Text of ``print(torch.tensor([values]))`` for a 1 x C float32 tensor under torch's default print options
    (the original's Probability column), computed without torch."""
    vals = [float(np.float32(v)) for v in values]
    finite = [v for v in vals if math.isfinite(v) and v != 0]  # signed: a minus sign widens the column
    int_mode = all(v == math.ceil(v) for v in finite)
    sci = False
    width = 1
    if finite:
        lo, hi = min(abs(v) for v in finite), max(abs(v) for v in finite)
        if int_mode:
            sci = hi / lo > 1000.0 or hi > 1.0e8
            width = max(len(f"{v:.{precision}e}") if sci else len(f"{v:.0f}") + 1 for v in finite)
        else:
            sci = hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4
            width = max(len(f"{v:.{precision}e}" if sci else f"{v:.{precision}f}") for v in finite)
    else:
        int_mode = True

    def fmt(v: float) -> str:
        if sci:
            text = f"{v:{width}.{precision}e}"
        elif int_mode:
            text = f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        else:
            text = f"{v:.{precision}f}"
        return " " * (width - len(text)) + text

    indent = len("tensor(") + 1  # the row sits inside two brackets
    per_line = max(1, (linewidth - indent) // (width + 2))
    items = [fmt(v) for v in vals]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "tensor([[" + (",\n" + " " * (indent + 1)).join(lines) + "]])"


def _format_number(value: float, dtype: np.dtype) -> str:
    return format_float32(value) if dtype == np.float32 else format_float(value)


def submission_text(
    names: Sequence[str],
    video_ids: Sequence[int],
    classes: np.ndarray,
    probability: np.ndarray,
    probability_format: str = "columns",
) -> str:
    """The challenge's ``VideoID,Video,ClassID`` CSV. ``columns``: plain numbers ``p0..pC-1`` after the class,
    ``\\n`` endings. ``torch``: the original's file byte for byte (``Probability`` holds a printed tensor, Excel
    dialect with ``\\r\\n`` endings)."""
    if probability_format not in PROBABILITY_FORMATS:
        raise PseudoLabelError(
            f"probability format must be one of {PROBABILITY_FORMATS}, got {probability_format!r}"
        )
    buf = io.StringIO()
    if probability_format == "torch":
        writer = csv.writer(buf, dialect="excel")
        writer.writerow(["VideoID", "Video", "ClassID", "Probability"])
        for vid, name, cls, row in zip(video_ids, names, classes, probability):
            writer.writerow([vid, name, int(cls), format_torch_row(row)])
        return buf.getvalue()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["VideoID", "Video", "ClassID", *(f"p{c}" for c in range(probability.shape[1]))])
    for vid, name, cls, row in zip(video_ids, names, classes, probability):
        writer.writerow([vid, name, int(cls), *(_format_number(v, probability.dtype) for v in row)])
    return buf.getvalue()


def read_submission(path: str | os.PathLike) -> tuple[list[int], list[str], np.ndarray, np.ndarray]:
    """Reads a submission / per-mode CSV in either format: (VideoID, Video, ClassID, probabilities (N, C))."""
    path = Path(path)
    if not path.is_file():
        raise PseudoLabelError(f"submission CSV not found: {path}")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:3] != ["VideoID", "Video", "ClassID"]:
        raise PseudoLabelError(f"{path}: expected a header starting VideoID,Video,ClassID")
    ids, names, classes, probs = [], [], [], []
    for row in rows[1:]:
        ids.append(int(row[0]))
        names.append(row[1])
        classes.append(int(row[2]))
        if len(row) == 4 and row[3].startswith("tensor("):
            text = row[3].replace("tensor(", "").replace(")", "").replace("[", "").replace("]", "")
            probs.append([float(x) for x in text.split(",")])
        else:
            probs.append([float(x) for x in row[3:]])
    return ids, names, np.asarray(classes, dtype=np.int64), np.asarray(probs, dtype=np.float64)


@dataclass
class EnsembleResult:
    """All modes, the vote and the submission rows."""

    names: tuple[str, ...]
    video_ids: np.ndarray
    modes: dict[str, ModeResult]
    voters: tuple[str, ...]
    method: str
    voted: np.ndarray
    source: list[str]  # per row: the mode whose row was copied ("majority" for the majority vote)
    votes: np.ndarray  # per row: how many voters chose the voted class
    probability: np.ndarray  # (N, C) the numbers written beside the voted class


def resolve_mode_paths(
    cfg: EnsembleConfig,
    root: str | os.PathLike,
    model_dirs: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, dict[str, Path]]:
    """Mode name -> role -> PKL path. ``model_dirs`` changes a role's folder (relative to root);
    ``overrides`` maps ``role`` or ``set:role`` to an explicit file."""
    root = Path(root)
    model_dirs, overrides = dict(model_dirs or {}), dict(overrides or {})
    unknown = [r for r in model_dirs if r not in cfg.models]
    unknown += [k for k in overrides if k.split(":")[-1] not in cfg.models]
    if unknown:
        raise PseudoLabelError(f"{cfg.source}: unknown model role(s) {unknown}; roles: {sorted(cfg.models)}")
    out = {}
    for mode in cfg.modes:
        paths = {}
        for role, file_name in mode.pkls.items():
            model = cfg.models[role]
            if f"{mode.pkl_set}:{role}" in overrides:
                paths[role] = Path(overrides[f"{mode.pkl_set}:{role}"])
            elif role in overrides:
                paths[role] = Path(overrides[role])
            elif model.path is not None and role not in model_dirs:
                paths[role] = root / model.path
            else:
                paths[role] = root / model_dirs.get(role, model.dir or ".") / file_name
        out[mode.name] = paths
    return out


def run_ensemble(
    cfg: EnsembleConfig,
    mode_paths: Mapping[str, Mapping[str, Path]],
    test_csv: str | os.PathLike | None,
    modes: Sequence[str] | None = None,
    voters: Sequence[str] | None = None,
    method: str | None = None,
) -> EnsembleResult:
    """Loads every PKL once, aligns them to the test list, runs the modes and the vote."""
    modes = list(modes or [m.name for m in cfg.modes])
    voters = tuple(voters or cfg.vote.modes)
    method = method or cfg.vote.method
    for name in modes:
        cfg.mode(name)  # raises for an unknown mode
    missing = [v for v in voters if v not in modes]
    if missing:
        raise PseudoLabelError(f"vote over mode(s) {missing} that are not run (running {modes})")
    files = {str(p): p for name in modes for p in mode_paths[name].values()}
    outputs = {key: load_pkl(p, cfg.num_classes) for key, p in files.items()}
    order = None
    if test_csv is not None:
        order, _ = read_video_list(test_csv)
    order_label = f"test CSV {test_csv}" if test_csv is not None else "the test CSV (--test-csv)"
    aligned = align_outputs(outputs, order, order_label)
    results = {}
    for name in modes:
        mode = cfg.mode(name)
        scores = {role: aligned.preds[str(path)] for role, path in mode_paths[name].items()}
        results[name] = run_mode(mode, scores, cfg.output_probability)
    video_ids = np.arange(aligned.num_videos)
    if method == "original":
        voted, source_idx = vote_original([results[v].final_pred for v in voters], cfg.num_classes)
        source = [voters[i] for i in source_idx]
        votes = np.sum([results[v].final_pred == voted for v in voters], axis=0)
        stacked = np.stack([results[v].probability for v in voters])  # (V, N, C)
        probability = stacked[source_idx, np.arange(voted.size)]
    elif method == "majority":
        voted, votes, mean_prob = vote_majority(
            [results[v].final_pred for v in voters],
            [results[v].fusion.fused for v in voters],
            cfg.num_classes,
        )
        source = ["majority"] * voted.size
        probability = mean_prob
    else:
        raise PseudoLabelError(f"vote method must be 'original' or 'majority', got {method!r}")
    return EnsembleResult(
        aligned.names, video_ids, results, voters, method, voted, source, votes, probability
    )


def details_text(result: EnsembleResult) -> str:
    """Per video: each mode's argmax and final class, the vote, where the written row came from, the votes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["VideoID", "Video"]
    for name in result.modes:
        header += [f"mode{name}_argmax", f"mode{name}_final"]
    writer.writerow([*header, "vote", "vote_source", "votes"])
    for i, name in enumerate(result.names):
        row: list = [int(result.video_ids[i]), name]
        for mode in result.modes.values():
            row += [int(mode.argmax[i]), int(mode.final_pred[i])]
        writer.writerow([*row, int(result.voted[i]), result.source[i], int(result.votes[i])])
    return buf.getvalue()


def write_ensemble_files(
    result: EnsembleResult,
    cfg: EnsembleConfig,
    out_dir: str | os.PathLike,
    probability_format: str = "columns",
) -> dict[str, Path]:
    """Writes the per-mode files, the voted submission and the details file (all atomically)."""
    out_dir = Path(out_dir)
    written = {}
    for name, mode in result.modes.items():
        path = out_dir / cfg.per_mode_file.format(mode=name)
        text = submission_text(
            result.names, result.video_ids, mode.final_pred, mode.probability, probability_format
        )
        written[f"mode {name}"] = atomic_write_text(path, text)
    text = submission_text(
        result.names, result.video_ids, result.voted, result.probability, probability_format
    )
    written["submission"] = atomic_write_text(out_dir / cfg.submission_file, text)
    written["details"] = atomic_write_text(out_dir / cfg.details_file, details_text(result))
    return written
