"""The tester (``TEST.ENABLE``): per-video scores of one split with multi-view x multi-crop (enhanced) TTA.

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

Every setting of ``TEST.EXTRA_SETTINGS`` ("VxC" or "VxC@ENHANCEMENT") writes its own PKL (``..._<tag>`` suffix,
e.g. ``_g0.45``, when its enhancement differs from the main one, ``ENHANCE.TEST``); a ``TEST.FRAME_CONTROL``
adds its own suffix (``_shuffle``, ``_oneframe``) to every PKL. Settings whose clips are a subset of a decoded setting (1x3 or 3x1 of a
3x3, 1x1 of anything with the centre crop and the middle view) reuse that pass's clip outputs; others get a
pass of their own. Either way the PKL equals the one a separate run of that setting writes.

With ``TENT.ENABLE`` the loaded model's BatchNorm affine parameters are first tuned by entropy minimisation on
unlabelled dark clips (:mod:`nightcrawler.engine.tent`; the entropy before/after is logged); then every split is
scored with the tuned model.

Checkpoint priority (the original's): ``TEST.CHECKPOINT_FILE_PATH`` -> ``OUTPUT_DIR/best.pyth`` when
``TEST.TEST_BEST`` -> the last file in ``OUTPUT_DIR/checkpoints`` -> ``TRAIN.CHECKPOINT_FILE_PATH`` -> the
model as built (random weights, or ``PRETRAIN_NAME`` zoo weights), with a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from yacs.config import CfgNode

from nightcrawler.data.enhance import Enhancement, phase_enhancement
from nightcrawler.data.sampling import FRAME_CONTROLS
from nightcrawler.data.splits import class_names
from nightcrawler.engine.checkpointer import best_checkpoint_path, find_resume_checkpoint
from nightcrawler.engine.metrics import classification_metrics, plot_confusion_matrix
from nightcrawler.engine.scoring import SplitScores, forward_plan, score_split
from nightcrawler.engine.tta import DecodePass, TTASetting, aggregate_clips, parse_tta_setting, plan_passes
from nightcrawler.pseudo.io import pkl_file_name, write_pkl
from nightcrawler.utils.distributed import (
    barrier,
    broadcast_object,
    broadcast_parameters,
    get_world_size,
    is_master,
    job_device,
)
from nightcrawler.utils.io import atomic_pickle_dump, atomic_write_text
from nightcrawler.utils.logging import log_json_stats

logger = logging.getLogger(__name__)


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
    """The model in eval mode on this process's device, with the test weights loaded (strictly)."""
    from nightcrawler.models import build_model, get_card
    from nightcrawler.models.checkpoint import (
        load_checkpoint_weights,
        load_weights_from_cfg,
        require_trained_classifier,
    )
    from nightcrawler.models.speed import speed_up_from_cfg

    path, source = resolve_test_checkpoint(cfg)
    model = build_model(cfg)
    if path is None:
        logger.warning(
            "no checkpoint to test (TEST.CHECKPOINT_FILE_PATH, best.pyth, OUTPUT_DIR/checkpoints, "
            "TRAIN.CHECKPOINT_FILE_PATH are all empty): testing the model as built (zoo or random weights)"
        )
        load_weights_from_cfg(
            model, cfg
        )  # zoo weights are only worth reading when no checkpoint replaces them
    else:
        logger.info("testing weights from %s (%s)", path, source)
        require_trained_classifier(model, load_checkpoint_weights(model, path, cfg, strict=True))
    model = speed_up_from_cfg(model.to(job_device(cfg.NUM_GPUS)), cfg)
    if path is None:
        broadcast_parameters(model)  # every process tests the same random weights
    logger.info("%s outputs %s per clip", cfg.MODEL.MODEL_NAME, get_card(cfg.MODEL.MODEL_NAME).outputs)
    return model.eval()


# ---------------------------------------------------------------------------------------------------- settings
def main_enhancement(cfg: CfgNode) -> Enhancement:
    """The enhancement every tested split is decoded with (``ENHANCE.TEST`` or its aliases)."""
    return phase_enhancement(cfg, "test")


def tta_settings(cfg: CfgNode) -> list[TTASetting]:
    """The main setting (TEST.NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS) followed by TEST.EXTRA_SETTINGS."""
    main = main_enhancement(cfg)
    first = TTASetting(cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS, main)
    return [first, *(parse_tta_setting(text, main) for text in cfg.TEST.EXTRA_SETTINGS)]


def pkl_path(cfg: CfgNode, setting: TTASetting, split: str | None = None) -> Path:
    """``OUTPUT_DIR/{split}x{NUM_FRAMES}x{TEST_CROP_SIZE}x{V}x{C}[_<tag>][_<control>].pkl`` (``split`` default
    TEST.DATA_SELECT; the tag only when the setting's enhancement differs from the main one, the control's
    suffix with TEST.FRAME_CONTROL)."""
    suffix = f"_{setting.enhancement.tag()}" if setting.enhancement != main_enhancement(cfg) else ""
    suffix += FRAME_CONTROLS[cfg.TEST.FRAME_CONTROL]
    name = pkl_file_name(
        split or cfg.TEST.DATA_SELECT,
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
def plan_loader(cfg, split: str, plan, open_fn=None, **loader_kwargs):
    """The loader of one decoding pass of ``plan`` over ``split`` (whole videos per batch, as many as
    TEST.BATCH_SIZE clips per process allow), its videos per batch and the clips per forward; ``loader_kwargs`` go
    to ``build_loader``."""
    from nightcrawler.data import build_loader
    from nightcrawler.data.decoders import open_video

    clips_per_process = max(1, cfg.TEST.BATCH_SIZE // get_world_size())
    videos_per_batch, chunk = forward_plan(
        len(plan.needed_columns()), clips_per_process, cfg.TEST.MAX_VIEWS_PER_FORWARD
    )
    loader = build_loader(
        cfg,
        split,
        batch_size=videos_per_batch,
        shuffle=False,
        drop_last=False,
        enhancement=list(plan.enhancements),
        views=plan.views,
        crops=plan.crops,
        open_fn=open_fn or open_video,
        **loader_kwargs,
    )
    return loader, videos_per_batch, chunk


def run_pass(
    model: nn.Module,
    cfg: CfgNode,
    plan: DecodePass,
    split: str | None = None,
    open_fn=None,
    known_bad: Sequence[str] = (),
) -> SplitScores:
    """Decodes every video of ``split`` (default TEST.DATA_SELECT) once for ``plan`` and scores the clips its
    settings use (``clip_outputs`` columns follow ``plan.needed_columns()``).

    ``known_bad``: list paths the pre-flight check found bad (left out unread, TEST.SKIP_BAD_VIDEOS). In strict
    mode an undecodable video does not stop the pass: every failure is collected and the pass then raises one
    :class:`~nightcrawler.data.check.BadVideosError` listing all of them."""
    split = split or cfg.TEST.DATA_SELECT
    needed = plan.needed_columns()
    loader, videos_per_batch, chunk = plan_loader(cfg, split, plan, open_fn)
    dataset = loader.dataset
    strict = not dataset.skip_bad
    dataset.skip_bad = True  # strict mode: collect every failure, raise once below
    bad_names = set(known_bad)
    dataset.known_bad = {i for i, row in enumerate(dataset.rows) if row.path in bad_names}
    logger.info(
        "%s (%d videos): decoding %s for %s; %d video(s) per batch, %d of %d clip(s) per video forwarded, "
        "at most %d of one video per forward",
        split,
        len(loader.dataset),
        plan.label(),
        ", ".join(s.label() for s, _ in plan.outputs),
        videos_per_batch,
        len(needed),
        plan.clips_per_video,
        chunk,
    )
    scores = score_split(
        model,
        loader,
        job_device(cfg.NUM_GPUS),
        columns=None if needed == list(range(plan.clips_per_video)) else needed,
        chunk=chunk,
        precision=cfg.TEST.MIXED_PRECISION,
        split=f"{split} {plan.label()}",
        require_videos=not strict,
    )
    if strict and scores.skipped:
        from nightcrawler.data.check import BadVideosError, VideoCheck

        skipped = set(scores.skipped)
        failed = [
            VideoCheck(
                i, row.path, dataset.paths[i], "undecodable", "failed during the test pass (see the log)"
            )
            for i, row in enumerate(dataset.rows)
            if row.path in skipped
        ]
        raise BadVideosError(
            failed,
            None,
            f"split {split}; tools/check_videos.py reports why, TEST.SKIP_BAD_VIDEOS True skips them",
        )
    done = len(scores.names) + len(scores.skipped)
    logger.info(
        "%s %s: %d videos in %.1f s (%.2f videos/s, %d process(es))",
        split,
        plan.label(),
        done,
        scores.seconds,
        done / max(scores.seconds, 1e-9),
        get_world_size(),
    )
    return scores


# ---------------------------------------------------------------------------------------------------- outputs
def write_setting(
    cfg: CfgNode, setting: TTASetting, scores: SplitScores, positions: list[int], split: str | None = None
) -> TestResult:
    """Aggregates ``setting``'s clips (``positions`` in ``scores.clip_outputs``, in the setting's clip order) per
    video and (rank 0) writes its PKL, metrics, figure and skip list for ``split`` (default TEST.DATA_SELECT)."""
    split = split or cfg.TEST.DATA_SELECT
    clips = scores.clip_outputs[:, positions]
    preds = aggregate_clips(clips, cfg.DATA.ENSEMBLE_METHOD).numpy().astype(np.float32)
    path = pkl_path(cfg, setting, split)
    result = TestResult(setting, path, preds, scores.labels, scores.names, None)
    if (scores.labels >= 0).any():
        result.metrics = classification_metrics(preds, scores.labels, class_names=class_names(preds.shape[1]))
    if not is_master():
        return result
    write_pkl(path, preds, scores.labels, scores.names)
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
                title=f"{split} {setting.label()}: top-1 {_fmt(m['top1_acc'])}%",
            )
        per_class = ", ".join(f"{k} {_fmt(v)}" for k, v in m["per_class_acc"].items())
        logger.info(
            "%s %s: top-1 %s%%, top-5 %s%% over %d labelled videos; per class: %s",
            split,
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
                "data_select": split,
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


def _save_results(cfg: CfgNode, result: TestResult) -> None:
    if not cfg.TEST.SAVE_RESULTS_PATH or not is_master():
        return
    path = Path(cfg.TEST.SAVE_RESULTS_PATH)
    path = path if path.is_absolute() else Path(cfg.OUTPUT_DIR) / path
    atomic_pickle_dump([result.video_preds, result.video_labels], path)
    logger.info("wrote [preds, labels] to %s", path)


# ---------------------------------------------------------------------------------------------------- pre-flight
CHECK_AUTO_MIN_VIDEOS = 501  # TEST.CHECK_VIDEOS "auto" checks splits of at least this many videos


def check_enabled(cfg: CfgNode, num_videos: int) -> bool:
    """Whether TEST.CHECK_VIDEOS asks for the pre-flight on a split of ``num_videos`` videos."""
    mode = str(cfg.TEST.CHECK_VIDEOS).strip().lower()
    if mode in ("true", "1", "yes", "on"):
        return True
    if mode in ("false", "0", "no", "off", ""):
        return False
    if mode == "auto":
        return num_videos >= CHECK_AUTO_MIN_VIDEOS
    raise ValueError(f"TEST.CHECK_VIDEOS must be auto, true or false, got {cfg.TEST.CHECK_VIDEOS!r}")


def preflight_check(cfg: CfgNode, split: str) -> list[str]:
    """Checks every video of ``split`` once before any model work (rank 0 checks, every rank gets the result).

    Writes ``OUTPUT_DIR/{split}_check.csv``. Strict mode (TEST.SKIP_BAD_VIDEOS False) raises one
    :class:`~nightcrawler.data.check.BadVideosError` listing every bad video; skip mode returns their list
    paths (the tester then leaves them out and lists them in ``*_skipped.txt``). Returns [] when off.
    """
    from nightcrawler.data.check import BadVideosError
    from nightcrawler.data.csvs import parse_video_list
    from nightcrawler.data.ug2 import split_paths

    csv_path, roots = split_paths(cfg, split)
    rows = parse_video_list(
        csv_path, num_classes=cfg.MODEL.NUM_CLASSES, separator=cfg.DATA.PATH_LABEL_SEPARATOR
    )
    if not check_enabled(cfg, len(rows)):
        return []
    outcome: tuple[list, str] | BaseException | None = None
    if is_master():
        try:
            outcome = _check_on_master(cfg, split, rows, roots)
        except Exception as exc:  # passed on, so that the other ranks do not wait forever
            outcome = exc
    outcome = broadcast_object(outcome)
    if isinstance(outcome, BaseException):
        raise outcome
    bad, report = outcome
    if bad and not cfg.TEST.SKIP_BAD_VIDEOS:
        raise BadVideosError(bad, report, f"split {split} ({csv_path}); TEST.SKIP_BAD_VIDEOS True skips them")
    return [r.name for r in bad]


def _check_on_master(cfg: CfgNode, split: str, rows, roots) -> tuple[list, str]:
    from nightcrawler.data.check import bad_records, check_videos, summary_line, write_report
    from nightcrawler.data.ug2 import resolve_video_paths

    paths, _ = resolve_video_paths(rows, roots)
    records = check_videos(
        paths,
        [r.path for r in rows],
        backend=cfg.DATA.DECODING_BACKEND,
        workers=cfg.TEST.CHECK_WORKERS or None,
        desc=f"checking {split}",
    )
    report = write_report(records, Path(cfg.OUTPUT_DIR) / f"{split}_check.csv")
    logger.info("pre-flight check of %s: %s (report %s)", split, summary_line(records), report)
    return bad_records(records), report


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
    known_bad: dict[str, list[str]] = {}
    for split in splits:
        known_bad[split] = preflight_check(cfg, split)
    model = build_test_model(cfg)
    if cfg.TENT.ENABLE:  # BatchNorm affine parameters tuned on unlabelled dark clips before any scoring
        from nightcrawler.engine.tent import adapt_with_tent

        adapt_with_tent(cfg, model, job_device(cfg.NUM_GPUS), open_fn=open_fn)
    results: list[TestResult] = []
    for split in splits:
        by_setting: dict[TTASetting, TestResult] = {}
        for p in passes:
            scores = run_pass(model, cfg, p, split, open_fn, known_bad[split])
            column = {c: j for j, c in enumerate(p.needed_columns())}
            for setting, cols in p.outputs:
                by_setting[setting] = write_setting(cfg, setting, scores, [column[c] for c in cols], split)
        results.extend(by_setting[s] for s in settings)
    _save_results(cfg, results[0])
    barrier()
    return results
