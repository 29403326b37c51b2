"""The tester (``TEST.ENABLE``): per-video scores of one split with multi-view x multi-crop (gamma) TTA.

``test(cfg)`` builds the model, loads the checkpoint (priority below), decodes every video of
``TEST.DATA_SELECT`` once for all its ``V x C`` clips, forwards the clips in memory-bounded chunks, gathers
exactly one row per video from every process in the CSV's order, aggregates the clip outputs per video as the
original (``DATA.ENSEMBLE_METHOD``: sum of the raw outputs — logits for UniFormer/SlowFast, eval softmax for
MViT), and writes on rank 0:

* ``OUTPUT_DIR/{DATA_SELECT}x{NUM_FRAMES}x{TEST_CROP_SIZE}x{V}x{C}.pkl``: a pickled dict with ``video_preds``
  (N x classes float32), ``video_labels`` (N int64, -1 when unknown) and ``video_names`` (N CSV paths);
* with labels present: ``<pkl stem>_metrics.json`` (top-1/top-5, per-class accuracy, confusion matrix) and
  ``<pkl stem>_confusion.png`` (``TEST.PLOTS``);
* ``<pkl stem>_skipped.txt`` listing undecodable videos left out (``TEST.SKIP_BAD_VIDEOS``);
* ``TEST.SAVE_RESULTS_PATH`` (relative to OUTPUT_DIR unless absolute): a pickled ``[preds, labels]`` pair.

Every setting of ``TEST.EXTRA_SETTINGS`` ("VxC" or "VxC@gG") writes its own PKL (``..._g<G>`` suffix when
its gamma differs from the main one). Settings whose clips are a subset of a decoded setting (1x3 or 3x1 of a
3x3, 1x1 of anything with the centre crop and the middle view) reuse that pass's clip outputs; others get a
pass of their own. Either way the PKL equals the one a separate run of that setting writes.

Checkpoint priority (the original's): ``TEST.CHECKPOINT_FILE_PATH`` -> ``OUTPUT_DIR/best.pyth`` when
``TEST.TEST_BEST`` -> the last file in ``OUTPUT_DIR/checkpoints`` -> ``TRAIN.CHECKPOINT_FILE_PATH`` -> the
model as built (random weights, or ``PRETRAIN_NAME`` zoo weights), with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from nightcrawler.engine.checkpointer import best_checkpoint_path, find_resume_checkpoint
from nightcrawler.engine.metrics import classification_metrics, plot_confusion_matrix
from nightcrawler.engine.tta import (
    DecodePass,
    TTASetting,
    aggregate_clips,
    gamma_text,
    parse_tta_setting,
    plan_passes,
)
from nightcrawler.engine.tta_data import bad_mask, build_pass_loader
from nightcrawler.utils.distributed import all_gather_object, barrier, get_world_size, is_master
from nightcrawler.utils.io import atomic_pickle_dump, atomic_write_text
from nightcrawler.utils.logging import log_json_stats

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class SplitScores:
    """Clip outputs of every tested video of a split, in CSV order."""

    indices: np.ndarray  # (N,) dataset positions (CSV rows) of the videos kept
    names: list[str]  # (N,) CSV relative paths
    labels: np.ndarray  # (N,) int64, -1 when unknown
    clip_outputs: torch.Tensor  # (N, K, classes) float32: the pass's forwarded clip columns, ascending
    skipped: list[str]  # CSV paths of videos that could not be decoded (TEST.SKIP_BAD_VIDEOS), CSV order
    dataset_size: int


@dataclass
class TestResult:
    """What one TTA setting produced (paths are set on rank 0 only)."""

    setting: TTASetting
    pkl_path: Path
    video_preds: np.ndarray
    video_labels: np.ndarray
    video_names: list[str]
    metrics: dict[str, Any] | None


# ---------------------------------------------------------------------------------------------------- checkpoint
def resolve_test_checkpoint(cfg: CfgNode) -> tuple[Path | None, str]:
    """The weights to test and where the choice came from (see the module docstring for the priority)."""
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        path = Path(cfg.TEST.CHECKPOINT_FILE_PATH)
        if not path.is_file():
            raise FileNotFoundError(f"TEST.CHECKPOINT_FILE_PATH = {str(path)!r} does not exist")
        return path, "TEST.CHECKPOINT_FILE_PATH"
    best = best_checkpoint_path(cfg.OUTPUT_DIR)
    if cfg.TEST.TEST_BEST:
        if best.is_file():
            return best, "TEST.TEST_BEST"
        logger.warning("TEST.TEST_BEST is set but %s does not exist; looking for other checkpoints", best)
    last = find_resume_checkpoint(cfg.OUTPUT_DIR)
    if last is not None:
        return last, "last checkpoint in OUTPUT_DIR/checkpoints"
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        path = Path(cfg.TRAIN.CHECKPOINT_FILE_PATH)
        if not path.is_file():
            raise FileNotFoundError(f"TRAIN.CHECKPOINT_FILE_PATH = {str(path)!r} does not exist")
        return path, "TRAIN.CHECKPOINT_FILE_PATH"
    return None, "none"


def build_test_model(cfg: CfgNode) -> nn.Module:
    """The model in eval mode with the test weights loaded (strictly), unwrapped from DDP."""
    from nightcrawler.models import build_model
    from nightcrawler.models.build import unwrap_model
    from nightcrawler.models.checkpoint import load_checkpoint_weights, require_trained_classifier

    path, source = resolve_test_checkpoint(cfg)
    # DDP (when several processes run) broadcasts rank 0's initial weights, so every rank holds the same model
    # even without a checkpoint; zoo weights are only worth reading when no checkpoint replaces them.
    model = unwrap_model(build_model(cfg, pretrained=path is None))
    if path is None:
        logger.warning(
            "no checkpoint to test (TEST.CHECKPOINT_FILE_PATH, best.pyth, OUTPUT_DIR/checkpoints, "
            "TRAIN.CHECKPOINT_FILE_PATH are all empty): testing the model as built (random weights)"
        )
    else:
        logger.info("testing weights from %s (%s)", path, source)
        require_trained_classifier(model, load_checkpoint_weights(model, path, cfg, strict=True))
    return model.eval()


# ---------------------------------------------------------------------------------------------------- settings
def main_gamma(cfg: CfgNode) -> float | None:
    """The gamma every test split is decoded with (None: no correction; TEST.GAMMA <= 0 or 1 means none)."""
    from nightcrawler.data.ug2 import normalize_gamma

    return normalize_gamma(cfg.TEST.GAMMA) if cfg.TEST.USE_GAMMA else None


def tta_settings(cfg: CfgNode) -> list[TTASetting]:
    """The main setting (TEST.NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS) followed by TEST.EXTRA_SETTINGS."""
    gamma = main_gamma(cfg)
    main = TTASetting(cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS, gamma)
    return [main, *(parse_tta_setting(text, gamma) for text in cfg.TEST.EXTRA_SETTINGS)]


def pkl_file_name(split: str, frames: int, crop: int, views: int, crops: int, suffix: str = "") -> str:
    """``{split}x{frames}x{crop}x{views}x{crops}{suffix}.pkl``, the tester's PKL name."""
    return f"{split}x{frames}x{crop}x{views}x{crops}{suffix}.pkl"


def pkl_path(cfg: CfgNode, setting: TTASetting) -> Path:
    """``OUTPUT_DIR/{DATA_SELECT}x{NUM_FRAMES}x{TEST_CROP_SIZE}x{V}x{C}[_g<G>].pkl`` (suffix only when the
    setting's gamma differs from the main one)."""
    suffix = f"_g{gamma_text(setting.gamma)}" if setting.gamma != main_gamma(cfg) else ""
    name = pkl_file_name(
        cfg.TEST.DATA_SELECT,
        cfg.DATA.NUM_FRAMES,
        cfg.DATA.TEST_CROP_SIZE,
        setting.views,
        setting.crops,
        suffix,
    )
    return Path(cfg.OUTPUT_DIR) / name


def view_index_fn(cfg: CfgNode):
    """(video length, views, view) -> frame indices of the test sampler of TEST.DATASET."""
    from nightcrawler.data import sampling

    t = cfg.DATA.NUM_FRAMES
    if cfg.TEST.DATASET == "ug2":
        rate, offset = cfg.DATA.SAMPLING_RATE, cfg.DATA.USE_OFFSET_SAMPLING
        return lambda n, v, i: sampling.dense_indices(n, t, rate, view=i, num_views=v, use_offset=offset)
    return lambda n, v, i: sampling.uniform_indices(n, t, view=i, num_views=v)


# ---------------------------------------------------------------------------------------------------- inference
def forward_plan(clips_per_video: int, clips_per_process: int, max_views_per_forward: int) -> tuple[int, int]:
    """(videos per loader batch, clips of one video per forward).

    A forward holds at most ``clips_per_process`` clips (TEST.BATCH_SIZE / processes) and at most
    ``max_views_per_forward`` clips of any one video (0: no limit); a batch of several videos is forwarded
    chunk by chunk, the same chunk of every video at once.
    """
    limit = max_views_per_forward if max_views_per_forward > 0 else clips_per_video
    chunk = max(1, min(clips_per_video, limit, clips_per_process))
    return max(1, clips_per_process // chunk), chunk


def _autocast(device: torch.device, mode: str):
    if mode not in _AMP_DTYPES:
        raise ValueError(f"TEST.MIXED_PRECISION = {mode!r} is not one of {', '.join(_AMP_DTYPES)}")
    dtype = _AMP_DTYPES[mode]
    if device.type != "cuda" or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def forward_clips(
    model: nn.Module,
    inputs: torch.Tensor,
    chunk: int,
    device: torch.device,
    precision: str = "none",
) -> torch.Tensor:
    """Model outputs (float32, CPU) of ``(B, K, 3, T, H, W)`` clips as ``(B, K, classes)``, forwarding clips
    ``[j, j + chunk)`` of every video together."""
    b, k = inputs.shape[:2]
    outs = []
    with torch.inference_mode(), _autocast(device, precision):
        for start in range(0, k, chunk):
            part = inputs[:, start : start + chunk]
            flat = part.reshape(-1, *inputs.shape[2:]).to(device, non_blocking=True)
            y = model(flat)
            if y.dim() != 2 or y.shape[0] != flat.shape[0]:
                raise RuntimeError(f"model returned shape {tuple(y.shape)} for {flat.shape[0]} clips")
            outs.append(y.float().reshape(b, part.shape[1], -1).cpu())
    return torch.cat(outs, dim=1)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="video", disable=not is_master(), dynamic_ncols=True, leave=False
    )


def run_pass(model: nn.Module, cfg: CfgNode, plan: DecodePass, open_fn=None) -> SplitScores:
    """Decodes every video of the split once for ``plan``, forwards the clips its settings use, and gathers
    the results of all processes (``clip_outputs`` columns follow ``plan.needed_columns()``)."""
    from nightcrawler.data.decoders import open_video

    device = torch.device("cuda", torch.cuda.current_device()) if cfg.NUM_GPUS > 0 else torch.device("cpu")
    world = get_world_size()
    needed = plan.needed_columns()
    per_video = len(plan.gammas) * plan.views * plan.crops
    select = None if needed == list(range(per_video)) else torch.tensor(needed)
    clips_per_process = max(1, cfg.TEST.BATCH_SIZE // world)
    videos_per_batch, chunk = forward_plan(len(needed), clips_per_process, cfg.TEST.MAX_VIEWS_PER_FORWARD)
    loader = build_pass_loader(
        cfg,
        cfg.TEST.DATA_SELECT,
        views=plan.views,
        crops=plan.crops,
        gammas=plan.gammas,
        batch_size=videos_per_batch,
        open_fn=open_fn or open_video,
    )
    dataset_size = len(loader.dataset)
    logger.info(
        "%s (%d videos): decoding %s for %s; %d video(s) per batch, %d of %d clip(s) per video forwarded, "
        "at most %d of one video per forward",
        cfg.TEST.DATA_SELECT,
        dataset_size,
        plan.label(),
        ", ".join(s.label() for s, _ in plan.outputs),
        videos_per_batch,
        len(needed),
        per_video,
        chunk,
    )
    indices: list[int] = []
    names: list[str] = []
    labels: list[int] = []
    outputs: list[torch.Tensor] = []
    skipped: list[tuple[int, str]] = []
    start = time.perf_counter()
    with _progress(len(loader.sampler), f"{cfg.TEST.DATA_SELECT} {plan.label()}") as bar:
        for batch in loader:
            batch_names = list(batch["names"])
            bad = bad_mask(batch)
            keep = ~bad
            skipped += [(int(i), n) for i, n, b in zip(batch["index"], batch_names, bad) if b]
            if keep.any():
                inputs = batch["inputs"][torch.from_numpy(keep)] if bad.any() else batch["inputs"]
                if inputs.shape[1] != per_video:
                    raise RuntimeError(
                        f"the {cfg.TEST.DATA_SELECT} loader gave {inputs.shape[1]} clips per video, expected "
                        f"{len(plan.gammas)} gamma(s) x {plan.views} views x {plan.crops} crops = {per_video}"
                    )
                if select is not None:
                    inputs = inputs[:, select]
                outputs.append(forward_clips(model, inputs, chunk, device, cfg.TEST.MIXED_PRECISION))
                indices += [int(i) for i, k in zip(batch["index"], keep) if k]
                names += [n for n, k in zip(batch_names, keep) if k]
                labels += [int(y) for y, k in zip(batch["labels"], keep) if k]
            bar.update(len(batch_names))
    elapsed = time.perf_counter() - start
    local_outputs = torch.cat(outputs).numpy() if outputs else None
    gathered = all_gather_object((indices, names, labels, local_outputs, skipped))
    done = sum(len(g[0]) + len(g[4]) for g in gathered)
    logger.info(
        "%s %s: %d videos in %.1f s (%.2f videos/s, %d process(es))",
        cfg.TEST.DATA_SELECT,
        plan.label(),
        done,
        elapsed,
        done / max(elapsed, 1e-9),
        world,
    )
    return merge_gathered(gathered, dataset_size, cfg.TEST.DATA_SELECT)


def merge_gathered(gathered: Sequence[tuple], dataset_size: int, split: str) -> SplitScores:
    """One row per dataset position in CSV order from every process's ``(indices, names, labels, outputs,
    skipped)``; a position seen twice keeps its first row, a position nobody tested is an error."""
    rows: dict[int, tuple[str, int, np.ndarray]] = {}
    skipped: dict[int, str] = {}
    for idx, names, labels, outs, bad in gathered:
        for j, (i, name, label) in enumerate(zip(idx, names, labels)):
            rows.setdefault(i, (name, label, outs[j]))
        skipped.update(bad)
    missing = dataset_size - len(rows) - len(skipped)
    if missing > 0:
        raise RuntimeError(f"{split}: {missing} of {dataset_size} videos were not tested by any process")
    if not rows:
        raise RuntimeError(f"{split}: none of the {dataset_size} videos could be decoded")
    order = sorted(rows)
    return SplitScores(
        indices=np.asarray(order, dtype=np.int64),
        names=[rows[i][0] for i in order],
        labels=np.asarray([rows[i][1] for i in order], dtype=np.int64),
        clip_outputs=torch.from_numpy(np.stack([rows[i][2] for i in order]).astype(np.float32, copy=False)),
        skipped=[skipped[i] for i in sorted(skipped)],
        dataset_size=dataset_size,
    )


# ---------------------------------------------------------------------------------------------------- outputs
def write_setting(cfg: CfgNode, setting: TTASetting, scores: SplitScores, positions: list[int]) -> TestResult:
    """Aggregates ``setting``'s clips (``positions`` in ``scores.clip_outputs``, in the setting's clip order) per
    video and (rank 0) writes its PKL, metrics, figure and skip list."""
    clips = scores.clip_outputs[:, positions]
    preds = aggregate_clips(clips, cfg.DATA.ENSEMBLE_METHOD).numpy().astype(np.float32)
    path = pkl_path(cfg, setting)
    result = TestResult(setting, path, preds, scores.labels, scores.names, None)
    if (scores.labels >= 0).any():
        result.metrics = classification_metrics(
            preds, scores.labels, class_names=_class_names(preds.shape[1])
        )
    if not is_master():
        return result
    atomic_pickle_dump(
        {
            "video_preds": preds,
            "video_labels": scores.labels.astype(np.int64),
            "video_names": list(scores.names),
        },
        path,
    )
    logger.info(
        "wrote %s (%d videos x %d classes, %s)", path, preds.shape[0], preds.shape[1], setting.label()
    )
    stem = path.with_suffix("")
    if scores.skipped:
        skip_path = Path(f"{stem}_skipped.txt")
        atomic_write_text(skip_path, "".join(f"{n}\n" for n in scores.skipped))
        logger.warning(
            "%d undecodable video(s) left out of %s (listed in %s)", len(scores.skipped), path.name, skip_path
        )
    if result.metrics is not None:
        m = result.metrics
        atomic_write_text(Path(f"{stem}_metrics.json"), _json(m))
        if cfg.TEST.PLOTS:
            plot_confusion_matrix(
                np.asarray(m["confusion_matrix"]),
                Path(f"{stem}_confusion.png"),
                class_names=m["class_names"],
                title=f"{cfg.TEST.DATA_SELECT} {setting.label()}: top-1 {_fmt(m['top1_acc'])}%",
            )
        per_class = ", ".join(f"{k} {_fmt(v)}" for k, v in m["per_class_acc"].items())
        logger.info(
            "%s %s: top-1 %s%%, top-5 %s%% over %d labelled videos; per class: %s",
            cfg.TEST.DATA_SELECT,
            setting.label(),
            _fmt(m["top1_acc"]),
            _fmt(m["top5_acc"]),
            m["num_labelled"],
            per_class,
        )
        log_json_stats(
            logger,
            {
                "split": "test_final",
                "data_select": cfg.TEST.DATA_SELECT,
                "setting": setting.label(),
                "top1_acc": m["top1_acc"],
                "top5_acc": m["top5_acc"],
                "top1_err": None if m["top1_acc"] is None else 100.0 - m["top1_acc"],
                "top5_err": None if m["top5_acc"] is None else 100.0 - m["top5_acc"],
            },
            cfg.OUTPUT_DIR,
        )
    return result


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, allow_nan=False) + "\n"


def _class_names(num_classes: int) -> list[str] | None:
    from nightcrawler.data import CLASS_NAMES

    return list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else None


def _save_results(cfg: CfgNode, result: TestResult) -> None:
    if not cfg.TEST.SAVE_RESULTS_PATH or not is_master():
        return
    path = Path(cfg.TEST.SAVE_RESULTS_PATH)
    path = path if path.is_absolute() else Path(cfg.OUTPUT_DIR) / path
    atomic_pickle_dump([result.video_preds, result.video_labels], path)
    logger.info("wrote [preds, labels] to %s", path)


# ---------------------------------------------------------------------------------------------------- entry
def test(cfg: CfgNode, open_fn=None) -> list[TestResult]:
    """Tests ``TEST.DATA_SELECT`` (then every ``TEST.ALSO_SPLITS`` split) with every TTA setting; returns one
    result per split and setting (main split and main setting first).

    ``open_fn`` replaces the video reader factory (tests).
    """
    from nightcrawler.data import TEST_SPLITS

    splits = list(dict.fromkeys([cfg.TEST.DATA_SELECT, *cfg.TEST.ALSO_SPLITS]))
    for split in splits:
        if split not in TEST_SPLITS:
            raise ValueError(
                f"TEST.DATA_SELECT / ALSO_SPLITS entry {split!r} is a training split or unknown; the tester reads one of "
                f"{', '.join(TEST_SPLITS)} (total_unlabel: all unlabelled dark videos, dark-train first)"
            )
    settings = list(dict.fromkeys(tta_settings(cfg)))
    passes = plan_passes(settings, view_index_fn(cfg))
    logger.info(
        "TTA settings %s in %d decoding pass(es): %s",
        [s.label() for s in settings],
        len(passes),
        "; ".join(f"{p.label()} -> {[s.label() for s, _ in p.outputs]}" for p in passes),
    )
    model = build_test_model(cfg)
    results: list[TestResult] = []
    for split in splits:
        split_cfg = cfg.clone()
        split_cfg.TEST.DATA_SELECT = split
        by_setting: dict[TTASetting, TestResult] = {}
        for p in passes:
            scores = run_pass(model, split_cfg, p, open_fn)
            column = {c: j for j, c in enumerate(p.needed_columns())}
            for setting, cols in p.outputs:
                by_setting[setting] = write_setting(split_cfg, setting, scores, [column[c] for c in cols])
        results.extend(by_setting[s] for s in settings)
    _save_results(cfg, results[0])
    barrier()
    return results
