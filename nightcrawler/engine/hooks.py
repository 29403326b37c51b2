"""What happens after a training epoch, as an ordered list of hooks (detectron2's pattern).

Default order (:func:`default_hooks`), the original's: report the epoch's training statistics, adapt BN
(evaluation or checkpoint epochs), evaluate every ``TRAIN.EVAL_SPLITS`` split, keep ``best.pyth`` by the monitored
metric (``top1_err`` of the last split, ``<=`` counts as better, as the original), write the periodic / latest
checkpoint. Every hook sees one :class:`EpochState`; each may read what the earlier ones recorded there.

The checkpoints are written after the evaluation (the original writes the periodic one just before): the weights
are the same, and the checkpoint then records the up-to-date best metric and the random state the next epoch
starts from, which makes a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nightcrawler.engine.bn_adapt import adapt_bn_statistics, bn_layers
from nightcrawler.engine.checkpointer import (
    best_checkpoint_path,
    epoch_checkpoint_path,
    gather_rng_states,
    is_checkpoint_epoch,
    latest_checkpoint_path,
    save_checkpoint,
)
from nightcrawler.engine.evaluate import EvalResult, build_eval_loader, evaluate

logger = logging.getLogger("nightcrawler.train")


@dataclass
class EpochState:
    """One epoch's end as the hooks see it (``run`` is the :class:`~nightcrawler.engine.train.TrainingRun`)."""

    run: Any
    epoch: int  # 0-based
    meter: Any
    seconds: float
    evaluating: bool  # an evaluation epoch with splits to evaluate
    periodic: bool  # a periodic checkpoint epoch
    best_metric: dict | None  # the best so far (persisted in the checkpoints), updated by BestCheckpoint
    results: list[EvalResult] = field(default_factory=list)  # filled by Evaluate, in split order
    improved: bool = False  # set by BestCheckpoint


class Hook:
    """Base class: override :meth:`after_epoch` (and :meth:`close` to release loaders)."""

    def after_epoch(self, state: EpochState) -> None:
        """Called after every epoch, in list order."""

    def close(self) -> None:
        """Called once when training ends (normally or not)."""


class ReportEpoch(Hook):
    """The epoch's training statistics to the log, ``json_stats`` and TensorBoard."""

    def after_epoch(self, state: EpochState) -> None:
        state.run.reporter.epoch(state.meter, state.epoch, state.seconds)


class AdaptBN(Hook):
    """Re-estimates BatchNorm statistics on ``split`` (``num_batches`` batches, clips built by the loader the
    run's ``bn_loader`` factory gives) before an evaluation or checkpoint epoch's other hooks."""

    def __init__(
        self, make_loader, num_batches: int, device: torch.device, pool_processes: bool, model_name: str
    ):
        self.make_loader = make_loader
        self.num_batches = num_batches
        self.device = device
        self.pool_processes = pool_processes
        self.model_name = model_name
        self._loader = None

    def after_epoch(self, state: EpochState) -> None:
        if not (state.evaluating or state.periodic):
            return
        model: nn.Module = state.run.model
        if not bn_layers(model):
            logger.info("adapt BN skipped: %s has no BatchNorm layer", self.model_name)
            return
        if self._loader is None:
            self._loader = self.make_loader()
        adapt_bn_statistics(
            model, self._loader, self.num_batches, self.device, pool_processes=self.pool_processes
        )

    def close(self) -> None:
        self._loader = None


class Evaluate(Hook):
    """Scores every split of ``splits`` (1x1) on evaluation epochs; records and reports the results."""

    def __init__(self, cfg, splits: list[str], device: torch.device, num_classes: int):
        self.cfg = cfg
        self.splits = list(splits)
        self.device = device
        self.num_classes = num_classes
        self.min_errors: dict[str, tuple[float, float]] = {}
        self._loaders: dict[str, Any] = {}

    def after_epoch(self, state: EpochState) -> None:
        if not state.evaluating:
            return
        for split in self.splits:
            if split not in self._loaders:
                self._loaders[split] = build_eval_loader(self.cfg, split)
            result = evaluate(state.run.model, self._loaders[split], self.device, split, self.num_classes)
            old = self.min_errors.get(split, (math.inf, math.inf))
            self.min_errors[split] = (min(old[0], result.top1_err), min(old[1], result.top5_err))
            state.run.reporter.evaluation(result, state.epoch, self.min_errors[split])
            state.results.append(result)

    def close(self) -> None:
        self._loaders.clear()


def _save(state: EpochState, path) -> None:
    run = state.run
    save_checkpoint(
        path,
        run.model,
        run.optimizer,
        run.precision.scaler,
        state.epoch,
        run.cfg,
        best_metric=state.best_metric,
        rng_states=gather_rng_states(),  # collective: every process
    )


class BestCheckpoint(Hook):
    """Tracks the best value of ``metric`` (an :class:`~nightcrawler.engine.evaluate.EvalResult` field, lower is
    better) on ``split`` (None: the last evaluated split) and writes ``best.pyth`` when it is matched or beaten."""

    def __init__(self, output_dir: str, metric: str = "top1_err", split: str | None = None):
        self.output_dir = output_dir
        self.metric = metric
        self.split = split

    def after_epoch(self, state: EpochState) -> None:
        chosen = [r for r in state.results if self.split in (None, r.split)]
        if not chosen:
            return
        result = chosen[-1]
        value = getattr(result, self.metric)
        if math.isnan(value):
            return
        best = state.best_metric
        if best is not None and best.get("split") == result.split and value > best.get(self.metric, math.inf):
            return
        state.best_metric = {
            "split": result.split,
            "top1_err": result.top1_err,
            "top5_err": result.top5_err,
            "epoch": state.epoch + 1,
        }
        state.improved = True
        logger.info("new best %s %s %.2f at epoch %d", result.split, self.metric, value, state.epoch + 1)
        _save(state, best_checkpoint_path(self.output_dir))


class PeriodicCheckpoint(Hook):
    """``checkpoints/checkpoint_latest.pyth`` every epoch (``latest``), else ``checkpoint_epoch_NNNNN.pyth`` on
    periodic epochs."""

    def __init__(self, output_dir: str, latest: bool):
        self.output_dir = output_dir
        self.latest = latest

    def after_epoch(self, state: EpochState) -> None:
        if self.latest:
            _save(state, latest_checkpoint_path(self.output_dir))
        elif state.periodic:
            _save(state, epoch_checkpoint_path(self.output_dir, state.epoch))


def epoch_flags(cfg, epoch: int) -> tuple[bool, bool]:
    """(evaluating, periodic) for ``epoch`` (0-based): evaluation every TRAIN.EVAL_PERIOD epochs and at the
    last one (when there are splits to evaluate); checkpoints every TRAIN.CHECKPOINT_PERIOD epochs."""
    period = cfg.TRAIN.EVAL_PERIOD
    is_eval = epoch + 1 == cfg.SOLVER.MAX_EPOCH or (period > 0 and (epoch + 1) % period == 0)
    periodic = is_checkpoint_epoch(epoch, cfg.TRAIN.CHECKPOINT_PERIOD, cfg.SOLVER.MAX_EPOCH)
    return is_eval and len(cfg.TRAIN.EVAL_SPLITS) > 0, periodic


def default_hooks(cfg, device: torch.device) -> list[Hook]:
    """The original's epoch-end side effects, in its order, from ``cfg``."""
    from nightcrawler.data import build_loader, phase_enhancement

    hooks: list[Hook] = [ReportEpoch()]
    if cfg.BN.USE_PRECISE_STATS:
        hooks.append(
            AdaptBN(
                lambda: build_loader(cfg, cfg.BN.SPLIT, enhancement=phase_enhancement(cfg, "bn")),
                cfg.BN.NUM_BATCHES_PRECISE,
                device,
                cfg.BN.SYNC_STATS,
                cfg.MODEL.MODEL_NAME,
            )
        )
    hooks += [
        Evaluate(cfg, list(cfg.TRAIN.EVAL_SPLITS), device, cfg.MODEL.NUM_CLASSES),
        BestCheckpoint(cfg.OUTPUT_DIR),
        PeriodicCheckpoint(cfg.OUTPUT_DIR, cfg.TRAIN.SAVE_LATEST),
    ]
    return hooks
