"""Classify video files with a trained model: the tester's decode-once TTA path, without a split or a PKL.

    from nightcrawler.inference import Recognizer
    r = Recognizer.from_config("exp_pseudo_stage4/uniformer_b32_k600/config.yaml", "best.pyth", device="cpu")
    r.predict("video.mp4").topk   # [("Walk", 0.91), ("Run", 0.05), ...]

A file's ``scores`` are what the tester writes in its PKL row for the same video and settings (the clip outputs
aggregated by ``DATA.ENSEMBLE_METHOD``); ``probs`` turn them into one probability vector
(:func:`probabilities_from_scores`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from nightcrawler.data.enhance import Enhancement, canonical

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """What a recognizer says about one video (``error`` set and the arrays empty when it did not decode)."""

    video: str  # the path as given
    topk: list[tuple[str, float]] = field(default_factory=list)  # (class name, probability), best first
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (classes,), sums to 1
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # the tester's PKL row
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        """The top-1 class name (None when the video did not decode)."""
        return self.topk[0][0] if self.topk else None


@dataclass(frozen=True)
class ClipSettings:
    """How a recognizer samples and prepares its test clips (read from the config; inspect, do not edit)."""

    views: int  # temporal views per video
    crops: int  # spatial crops per view (1: centre, 3: left/centre/right)
    num_frames: int  # frames per clip
    crop_size: int  # clip side in pixels (the short side is scaled to it first)
    sampling: str  # "uniform" (TEST.DATASET ug2_sparse) or "dense" (ug2: every SAMPLING_RATE-th frame)
    sampling_rate: int
    enhancement: Enhancement  # applied to the decoded frames (e.g. gamma 0.25)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    aggregation: str  # DATA.ENSEMBLE_METHOD over the views x crops clip outputs

    @property
    def clips_per_video(self) -> int:
        return self.views * self.crops


def probabilities_from_scores(
    scores: np.ndarray, outputs: str, aggregation: str, num_clips: int
) -> np.ndarray:
    """One probability vector per row of aggregated clip outputs (float32, rows sum to 1).

    ``outputs`` is the model card's kind: ``logits`` rows become ``softmax(mean logit)`` (a ``sum`` is divided by
    the clip count first, so the confidence does not grow with the number of views); ``probabilities`` rows
    (MViT's eval softmax) are renormalised (a ``sum`` of K softmaxes divided by K is their mean).
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"scores must be (videos, classes), got shape {x.shape}")
    if aggregation == "sum":
        x = x / max(1, num_clips)
    if outputs == "logits":
        x = np.exp(x - x.max(axis=1, keepdims=True))
    elif outputs != "probabilities":
        raise ValueError(f"outputs must be 'logits' or 'probabilities', got {outputs!r}")
    total = x.sum(axis=1, keepdims=True)
    return (x / np.where(total > 0, total, 1.0)).astype(np.float32)


def _topk(probs: np.ndarray, names: Sequence[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[: max(1, k)]
    return [(names[i], float(probs[i])) for i in order]


class Recognizer:
    """A trained model with the tester's clip settings, classifying video files.

    Attributes:
        model: the network in eval mode on ``device``.
        cfg: the (frozen) configuration it was built from.
        class_names: one name per output class.
        clips: the :class:`ClipSettings` (views x crops, frames, crop, enhancement, normalisation, aggregation).
        device: where the forward passes run.
        topk: how many classes :meth:`predict` reports.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: CfgNode,
        *,
        device: str | torch.device = "cpu",
        class_names: Sequence[str] | None = None,
        views: int | None = None,
        crops: int | None = None,
        enhancement: str | Enhancement | None = None,
        topk: int = 5,
    ):
        from nightcrawler.data.splits import class_names as default_class_names
        from nightcrawler.engine.test import main_enhancement
        from nightcrawler.models import get_card

        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        num_classes = cfg.MODEL.NUM_CLASSES
        names = class_names or default_class_names(num_classes) or [f"class_{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for a model of {num_classes} classes")
        self.class_names = list(names)
        self.outputs = get_card(cfg.MODEL.MODEL_NAME).outputs
        self.clips = ClipSettings(
            views=views or cfg.TEST.NUM_ENSEMBLE_VIEWS,
            crops=crops or cfg.TEST.NUM_SPATIAL_CROPS,
            num_frames=cfg.DATA.NUM_FRAMES,
            crop_size=cfg.DATA.TEST_CROP_SIZE,
            sampling="dense" if cfg.TEST.DATASET == "ug2" else "uniform",
            sampling_rate=cfg.DATA.SAMPLING_RATE,
            enhancement=main_enhancement(cfg) if enhancement is None else canonical(enhancement),
            mean=tuple(cfg.DATA.MEAN),
            std=tuple(cfg.DATA.STD),
            aggregation=cfg.DATA.ENSEMBLE_METHOD,
        )
        if self.clips.crops not in (1, 3) or self.clips.views < 1:
            raise ValueError(f"need views >= 1 and crops 1 or 3, got {self.clips.views} x {self.clips.crops}")
        self.topk = topk

    @classmethod
    def from_config(
        cls,
        cfg_path: str | os.PathLike,
        checkpoint: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        opts: Sequence[str] = (),
        **kwargs,
    ) -> Recognizer:
        """Builds the model of the experiment config ``cfg_path`` (``opts``: KEY VALUE overrides) and loads
        ``checkpoint`` strictly, as the tester does; ``kwargs`` go to :class:`Recognizer` (``views``, ``crops``,
        ``enhancement``, ``class_names``, ``topk``)."""
        from nightcrawler.config import assert_and_infer_cfg, load_config
        from nightcrawler.engine.test import build_test_model

        device = torch.device(device)
        if not os.path.isfile(checkpoint):
            from nightcrawler.models.checkpoint import CheckpointError

            raise CheckpointError(f"checkpoint not found: {os.fspath(checkpoint)}")
        cfg = load_config(os.fspath(cfg_path), list(opts))
        cfg.NUM_GPUS = 1 if device.type == "cuda" else 0
        cfg.NUM_SHARDS, cfg.SHARD_ID = 1, 0
        cfg.TEST.CHECKPOINT_FILE_PATH = os.fspath(checkpoint)
        cfg = assert_and_infer_cfg(cfg)
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)
        model = build_test_model(cfg)
        return cls(model, cfg, device=device, **kwargs)

    # ------------------------------------------------------------------------------------------ predicting
    def predict(self, path: str | os.PathLike) -> Prediction:
        """The prediction for one video; raises :class:`~nightcrawler.data.decoders.VideoDecodeError` (or
        FileNotFoundError) when it cannot be read."""
        [result] = self.predict_many([path], strict=True, progress=False)
        return result

    def predict_many(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        batch_size: int | None = None,
        num_workers: int | None = None,
        strict: bool = False,
        progress: bool = True,
    ) -> list[Prediction]:
        """Predictions for ``paths``, in order. ``batch_size``: videos decoded and forwarded together (default
        from TEST.BATCH_SIZE, which counts clips). A video that cannot be read gives a Prediction with
        ``error`` (its reason); ``strict`` raises one error naming every such video instead."""
        from nightcrawler.data.loader import build_file_loader
        from nightcrawler.engine.scoring import forward_plan, score_split
        from nightcrawler.engine.test import view_index_fn
        from nightcrawler.engine.tta import TTASetting, aggregate_clips, plan_passes

        paths = [os.fspath(p) for p in paths]
        if not paths:
            return []
        setting = TTASetting(self.clips.views, self.clips.crops, self.clips.enhancement)
        [plan] = plan_passes([setting], view_index_fn(self.cfg))
        needed = plan.needed_columns()
        per_batch, chunk = forward_plan(
            len(needed), self.cfg.TEST.BATCH_SIZE, self.cfg.TEST.MAX_VIEWS_PER_FORWARD
        )
        loader = build_file_loader(
            self.cfg,
            paths,
            batch_size=batch_size or per_batch,
            enhancement=list(plan.enhancements),
            views=plan.views,
            crops=plan.crops,
            skip_bad=True,  # every failure collected, reported (or raised) once below
            num_workers=num_workers,
        )
        scores = score_split(
            self.model,
            loader,
            self.device,
            columns=None if needed == list(range(plan.clips_per_video)) else needed,
            chunk=chunk,
            precision=self.cfg.TEST.MIXED_PRECISION,
            split="predicting",
            progress=progress,
            require_videos=False,
        )
        [(_, columns)] = plan.outputs
        position = {c: j for j, c in enumerate(needed)}
        aggregated = np.zeros((0, len(self.class_names)), np.float32)
        if len(scores.indices):  # else no video decoded: nothing to aggregate
            clip_outputs = scores.clip_outputs[:, [position[c] for c in columns]]
            aggregated = aggregate_clips(clip_outputs, self.clips.aggregation).numpy()
        probs = probabilities_from_scores(aggregated, self.outputs, self.clips.aggregation, setting.num_clips)
        by_index = {int(i): j for j, i in enumerate(scores.indices)}
        failed = [i for i in range(len(paths)) if i not in by_index]
        reasons = self._reasons([paths[i] for i in failed])
        if strict and failed:
            from nightcrawler.data.check import BadVideosError

            raise BadVideosError([reasons[paths[i]] for i in failed], None, "the videos to classify")
        results = []
        for i, path in enumerate(paths):
            if i not in by_index:
                record = reasons[path]
                results.append(Prediction(path, error=f"{record.kind}: {record.reason}"))
                continue
            j = by_index[i]
            results.append(
                Prediction(
                    path,
                    _topk(probs[j], self.class_names, self.topk),
                    probs[j],
                    aggregated[j].astype(np.float32),
                )
            )
        return results

    def _reasons(self, paths: Sequence[str]) -> dict:
        """Why each of ``paths`` could not be used (the checker's record: missing, empty, undecodable, ...)."""
        from nightcrawler.data.check import VideoCheck, check_videos

        if not paths:
            return {}
        records = check_videos(paths, backend=self.cfg.DATA.DECODING_BACKEND, workers=1, progress=False)
        out = {}
        for path, record in zip(paths, records):
            if record.ok:  # the checker's frames decode, the clips' did not
                record = VideoCheck(record.index, path, path, "undecodable", "failed while making the clips")
            out[path] = record
        return out

    def __repr__(self) -> str:
        c = self.clips
        return (
            f"Recognizer({self.cfg.MODEL.MODEL_NAME}, {len(self.class_names)} classes, {c.views}x{c.crops} clips of "
            f"{c.num_frames}x{c.crop_size}, {c.enhancement.spec}, {self.device})"
        )


def average_predictions(
    runs: Sequence[Sequence[Prediction]], topk: int, class_names: Sequence[str]
) -> list[Prediction]:
    """Fuses several recognizers' predictions of the same videos by averaging their probabilities; a video that
    failed in any run keeps that run's error. ``scores`` of a fused prediction are the mean probabilities."""
    if not runs:
        return []
    fused = []
    for row in zip(*runs, strict=True):
        video = row[0].video
        if any(p.video != video for p in row):
            raise ValueError(f"the runs disagree on the video order at {video}")
        bad = next((p for p in row if not p.ok), None)
        if bad is not None:
            fused.append(Prediction(video, error=bad.error))
            continue
        shapes = {p.probs.shape for p in row}
        if len(shapes) != 1 or len(class_names) != row[0].probs.shape[0]:
            raise ValueError(
                f"the models disagree on the classes ({sorted(shapes)}, {len(class_names)} names)"
            )
        mean = np.mean([p.probs for p in row], axis=0).astype(np.float32)
        fused.append(Prediction(video, _topk(mean, class_names, topk), mean, mean))
    return fused
