"""Running statistics of training and their JSON / progress-line forms."""

from __future__ import annotations

import datetime
import resource
import sys
from collections import deque
from collections.abc import Mapping

import numpy as np
import torch


class SmoothedValue:
    """A scalar series: median over a recent window, and the count-weighted mean over everything."""

    def __init__(self, window: int = 10) -> None:
        self._window: deque[float] = deque(maxlen=max(1, window))
        self.total = 0.0
        self.count = 0.0

    def update(self, value: float, n: float = 1.0) -> None:
        self._window.append(float(value))
        self.total += float(value) * n
        self.count += n

    @property
    def median(self) -> float:
        return float(np.median(self._window)) if self._window else float("nan")

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else float("nan")


def memory_gb() -> tuple[float, float]:
    """(peak CUDA memory allocated by this process, peak resident host memory), in GiB."""
    gpu = torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else 0.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024
    return gpu, rss_bytes / 1024**3


def format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class TrainMeter:
    """Losses, errors and timings of one training epoch (values are already averaged over processes)."""

    def __init__(self, iters_per_epoch: int, max_epoch: int, window: int = 10) -> None:
        self.iters_per_epoch = iters_per_epoch
        self.max_epoch = max_epoch
        self.window = window
        self.reset()

    def reset(self) -> None:
        self.scalars: dict[str, SmoothedValue] = {}
        self.counts: dict[str, int] = {}  # epoch totals (e.g. failed_videos)
        self.dt_data = SmoothedValue(self.window)
        self.dt_step = SmoothedValue(self.window)
        self.lr = float("nan")

    def update(self, values: Mapping[str, float], n: int, lr: float, dt_data: float, dt_step: float) -> None:
        """Adds one iteration: ``values`` (loss, top1_err, ...) weighted by ``n`` clips."""
        for key, value in values.items():
            self.scalars.setdefault(key, SmoothedValue(self.window)).update(value, n)
        self.lr = lr
        self.dt_data.update(dt_data)
        self.dt_step.update(dt_step)

    def eta_seconds(self, epoch: int, it: int) -> float:
        remaining = (self.max_epoch - epoch - 1) * self.iters_per_epoch + self.iters_per_epoch - it - 1
        return self.dt_step.global_avg * remaining

    def iter_stats(self, epoch: int, it: int) -> dict:
        gpu, ram = memory_gb()
        stats = {
            "_type": "train_iter",
            "epoch": f"{epoch + 1}/{self.max_epoch}",
            "iter": f"{it + 1}/{self.iters_per_epoch}",
            "lr": self.lr,
            "dt": self.dt_step.median,
            "dt_data": self.dt_data.median,
            "eta": format_eta(self.eta_seconds(epoch, it)),
            "gpu_mem": f"{gpu:.2f}G",
            "ram": f"{ram:.2f}G",
        }
        stats.update({k: v.median for k, v in self.scalars.items()})
        return stats

    def epoch_stats(self, epoch: int) -> dict:
        gpu, ram = memory_gb()
        stats = {
            "_type": "train_epoch",
            "epoch": f"{epoch + 1}/{self.max_epoch}",
            "lr": self.lr,
            "dt": self.dt_step.global_avg,
            "dt_data": self.dt_data.global_avg,
            "gpu_mem": f"{gpu:.2f}G",
            "ram": f"{ram:.2f}G",
        }
        stats.update({k: v.global_avg for k, v in self.scalars.items()})
        stats.update(self.counts)
        return stats

    @staticmethod
    def progress_line(stats: Mapping) -> str:
        """The one-line human summary of :meth:`iter_stats`."""
        parts = [f"epoch {stats['epoch']}", f"iter {stats['iter']}"]
        for key in ("loss", "pseudo_loss", "top1_err"):
            if key in stats:
                parts.append(f"{key} {stats[key]:.4f}" if key != "top1_err" else f"top1_err {stats[key]:.2f}")
        parts += [
            f"lr {stats['lr']:.3e}",
            f"data {stats['dt_data']:.3f}s",
            f"step {stats['dt']:.3f}s",
            f"eta {stats['eta']}",
            f"mem {stats['gpu_mem']}/{stats['ram']}",
        ]
        return " | ".join(parts)


def batch_topk_errors(
    logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> list[float]:
    """Top-k errors (percent) of one training batch, for hard labels (N,) or mixed targets (N, C).

    With mixed targets, as the original: the two largest target classes are merged (the second's score added
    onto the first's) and the first is taken as the label.
    """
    from nightcrawler.engine.metrics import topk_correct

    preds = logits.detach().float().clone()
    if targets.dim() == 2:
        top2 = torch.topk(targets, min(2, targets.shape[1]), dim=1).indices
        labels = top2[:, 0]
        if top2.shape[1] == 2:
            rows = torch.arange(preds.shape[0], device=preds.device)
            preds[rows, top2[:, 0]] += preds[rows, top2[:, 1]]
            preds[rows, top2[:, 1]] = 0.0
    else:
        labels = targets
    n = preds.shape[0]
    correct = topk_correct(preds, labels, ks)
    return [100.0 * (1.0 - c / n) for c in correct]
