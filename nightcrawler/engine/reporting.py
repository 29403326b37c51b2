"""What a researcher sees during training: progress lines, JSON stats, TensorBoard scalars, confusion plots.

The figures are already averaged over processes, so only global rank 0 reports them (log lines,
``stats.jsonl``, TensorBoard events, PNGs); other ranks log only their warnings and errors.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from yacs.config import CfgNode

from nightcrawler.engine.evaluate import EvalResult
from nightcrawler.engine.meters import TrainMeter, memory_gb
from nightcrawler.utils.distributed import is_master
from nightcrawler.utils.logging import log_json_stats

logger = logging.getLogger("nightcrawler.train")

_SPEC_CLASS_NAMES = ("Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand", "Turn", "Walk", "Wave")


def class_names(num_classes: int) -> list[str]:
    """The UG2/ARID class names (spec 1.6) for 11 classes, else the indices as text."""
    if num_classes == len(_SPEC_CLASS_NAMES):
        return list(_SPEC_CLASS_NAMES)
    return [str(i) for i in range(num_classes)]


class TrainingReporter:
    """Sends iteration / epoch / evaluation figures to the log, ``stats.jsonl``, TensorBoard and plots."""

    def __init__(self, cfg: CfgNode) -> None:
        self.output_dir = cfg.OUTPUT_DIR
        self.num_classes = cfg.MODEL.NUM_CLASSES
        self.log_period = max(1, cfg.LOG_PERIOD)
        self.writer = None
        self.enabled = is_master()
        if cfg.TENSORBOARD.ENABLE and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = cfg.TENSORBOARD.LOG_DIR or f"runs-{cfg.TRAIN.DATASET}"
            self.writer = SummaryWriter(os.path.join(cfg.OUTPUT_DIR, log_dir))

    def _scalars(self, prefix: str, values: Mapping[str, object], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def iteration(self, meter: TrainMeter, epoch: int, it: int, global_step: int) -> None:
        """Every ``LOG_PERIOD`` iterations (and the last of an epoch): progress line + ``train_iter`` stats."""
        if not self.enabled or ((it + 1) % self.log_period and it + 1 != meter.iters_per_epoch):
            return
        stats = meter.iter_stats(epoch, it)
        logger.info(TrainMeter.progress_line(stats))
        log_json_stats(logger, stats, self.output_dir)
        self._scalars("Train", {k: v for k, v in stats.items() if not k.startswith("_")}, global_step)

    def epoch(self, meter: TrainMeter, epoch: int, seconds: float) -> None:
        if not self.enabled:
            return
        stats = meter.epoch_stats(epoch)
        stats["time_diff"] = seconds
        log_json_stats(logger, stats, self.output_dir)
        logger.info(
            "Epoch %d takes %.2f s; each iteration takes %.3f s on average (%d iterations)",
            epoch + 1,
            seconds,
            seconds / max(meter.iters_per_epoch, 1),
            meter.iters_per_epoch,
        )
        self._scalars("Train_epoch", {k: v for k, v in stats.items() if not k.startswith("_")}, epoch + 1)

    def evaluation(self, result: EvalResult, epoch: int, min_errors: tuple[float, float]) -> None:
        """``val_epoch`` stats, TensorBoard accuracy and a confusion-matrix PNG for one split."""
        if not self.enabled:
            return
        gpu, ram = memory_gb()
        stats = {
            "_type": "val_epoch",
            "split": result.split,
            "epoch": epoch + 1,
            "top1_err": result.top1_err,
            "top5_err": result.top5_err,
            "min_top1_err": min_errors[0],
            "min_top5_err": min_errors[1],
            "num_videos": result.num_videos,
            "time_diff": result.seconds,
            "gpu_mem": f"{gpu:.2f}G",
            "ram": f"{ram:.2f}G",
        }
        log_json_stats(logger, stats, self.output_dir)
        self._scalars(
            f"Val/{result.split}",
            {"top1_err": result.top1_err, "top5_err": result.top5_err, "top1_acc": 100.0 - result.top1_err},
            epoch + 1,
        )
        if result.num_labelled:
            from nightcrawler.engine.metrics import plot_confusion_matrix

            path = Path(self.output_dir) / "plots" / f"confusion_{result.split}_epoch{epoch + 1:05d}.png"
            plot_confusion_matrix(
                result.confusion,
                path,
                class_names(self.num_classes),
                title=f"{result.split}, epoch {epoch + 1}: top-1 {100.0 - result.top1_err:.2f}%",
            )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
