"""The one scorer: every video of a test loader forwarded, clip outputs gathered from all processes, one row
per video in the CSV's order.

Training-time evaluation scores 1 view x 1 crop through it (:mod:`nightcrawler.engine.evaluate`); the tester
scores its TTA passes through it (:mod:`nightcrawler.engine.test`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nightcrawler.models.build import unwrap_model
from nightcrawler.utils.distributed import all_gather_object, amp_dtype, is_master


@dataclass
class SplitScores:
    """Clip outputs of every scored video of a split, in CSV order."""

    indices: np.ndarray  # (N,) dataset positions (CSV rows) of the videos kept
    names: list[str]  # (N,) CSV relative paths
    labels: np.ndarray  # (N,) int64, -1 when unknown
    clip_outputs: torch.Tensor  # (N, K, classes) float32: the forwarded clip columns, ascending
    skipped: list[str]  # CSV paths of videos that could not be decoded (TEST.SKIP_BAD_VIDEOS), CSV order
    dataset_size: int
    seconds: float = 0.0


def forward_plan(clips_per_video: int, clips_per_process: int, max_views_per_forward: int) -> tuple[int, int]:
    """(videos per loader batch, clips of one video per forward).

    A forward holds at most ``clips_per_process`` clips (TEST.BATCH_SIZE / processes) and at most
    ``max_views_per_forward`` clips of any one video (0: no limit); a batch of several videos is forwarded
    chunk by chunk, the same chunk of every video at once.
    """
    limit = max_views_per_forward if max_views_per_forward > 0 else clips_per_video
    chunk = max(1, min(clips_per_video, limit, clips_per_process))
    return max(1, clips_per_process // chunk), chunk


def autocast(device: torch.device, mode: str):
    """Autocast for ``none`` / ``fp16`` / ``bf16`` inference (CUDA only; a no-op elsewhere and for none)."""
    dtype = amp_dtype(mode, "TEST.MIXED_PRECISION")
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
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, k, chunk):
            part = inputs[:, start : start + chunk]
            flat = part.reshape(-1, *inputs.shape[2:]).to(device, non_blocking=True)
            y = model(flat)
            if y.dim() != 2 or y.shape[0] != flat.shape[0]:
                raise RuntimeError(f"model returned shape {tuple(y.shape)} for {flat.shape[0]} clips")
            outs.append(y.float().reshape(b, part.shape[1], -1).cpu())
    return torch.cat(outs, dim=1)


def bad_mask(batch: dict[str, Any]) -> np.ndarray:
    """Which videos of a test batch failed to decode (``ok`` False; only under TEST.SKIP_BAD_VIDEOS)."""
    ok = batch.get("ok")
    if ok is None:
        return np.zeros(len(batch["names"]), dtype=bool)
    return ~torch.as_tensor(ok).bool().numpy()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="video",
        disable=not (enabled and is_master()),
        dynamic_ncols=True,
        leave=False,
    )


def score_split(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    *,
    columns: Sequence[int] | None = None,
    chunk: int | None = None,
    precision: str = "none",
    split: str = "",
    progress: bool = True,
    require_videos: bool = True,
) -> SplitScores:
    """Forwards every video of ``loader`` (test batches: ``inputs`` (B, K, 3, T, H, W), ``labels``, ``index``,
    ``names``, ``ok``) and gathers the results of all processes.

    Args:
        model: run in eval mode (restored afterwards) and unwrapped from DDP (each process scores its own
            videos, so no collective may run inside the forward).
        columns: the clip columns to forward (default: all), ascending; ``clip_outputs`` follows them.
        chunk: clips of one video per forward (default: all of them).
        precision: ``none`` / ``fp16`` / ``bf16`` autocast on CUDA.
        require_videos: raise when no video of the split could be scored (else an empty result).
    """
    bare = unwrap_model(model)
    was_training = bare.training
    bare.eval()
    select = None if columns is None else torch.as_tensor(list(columns), dtype=torch.long)
    dataset_size = len(loader.dataset)
    indices: list[int] = []
    names: list[str] = []
    labels: list[int] = []
    outputs: list[torch.Tensor] = []
    skipped: list[tuple[int, str]] = []
    start = time.perf_counter()
    try:
        with _progress(len(loader.sampler), split, progress) as bar:
            for batch in loader:
                batch_names = list(batch["names"])
                bad = bad_mask(batch)
                keep = ~bad
                skipped += [(int(i), n) for i, n, b in zip(batch["index"], batch_names, bad) if b]
                if keep.any():
                    inputs = batch["inputs"][torch.from_numpy(keep)] if bad.any() else batch["inputs"]
                    if select is not None:
                        inputs = inputs[:, select]
                    outputs.append(forward_clips(bare, inputs, chunk or inputs.shape[1], device, precision))
                    indices += [int(i) for i, k in zip(batch["index"], keep) if k]
                    names += [n for n, k in zip(batch_names, keep) if k]
                    labels += [int(y) for y, k in zip(batch["labels"], keep) if k]
                bar.update(len(batch_names))
    finally:
        bare.train(was_training)
    elapsed = time.perf_counter() - start
    local_outputs = torch.cat(outputs).numpy() if outputs else None
    gathered = all_gather_object((indices, names, labels, local_outputs, skipped))
    scores = merge_gathered(gathered, dataset_size, split, require_videos=require_videos)
    scores.seconds = elapsed
    return scores


def merge_gathered(
    gathered: Sequence[tuple], dataset_size: int, split: str, *, require_videos: bool = True
) -> SplitScores:
    """One row per dataset position in CSV order from every process's ``(indices, names, labels, outputs,
    skipped)``; a position seen twice keeps its first row, a position nobody scored is an error."""
    rows: dict[int, tuple[str, int, np.ndarray]] = {}
    skipped: dict[int, str] = {}
    width = next((o.shape[2] for *_, o, _ in gathered if o is not None), 0)
    clips = next((o.shape[1] for *_, o, _ in gathered if o is not None), 0)
    for idx, names, labels, outs, bad in gathered:
        for j, (i, name, label) in enumerate(zip(idx, names, labels)):
            rows.setdefault(i, (name, label, outs[j]))
        skipped.update(bad)
    missing = dataset_size - len(rows) - len(skipped)
    if missing > 0:
        raise RuntimeError(f"{split}: {missing} of {dataset_size} videos were not scored by any process")
    if not rows and require_videos:
        raise RuntimeError(f"{split}: none of the {dataset_size} videos could be decoded")
    order = sorted(rows)
    outputs = (
        np.stack([rows[i][2] for i in order]).astype(np.float32, copy=False)
        if order
        else np.zeros((0, clips, width), dtype=np.float32)
    )
    return SplitScores(
        indices=np.asarray(order, dtype=np.int64),
        names=[rows[i][0] for i in order],
        labels=np.asarray([rows[i][1] for i in order], dtype=np.int64),
        clip_outputs=torch.from_numpy(outputs),
        skipped=[skipped[i] for i in sorted(skipped)],
        dataset_size=dataset_size,
    )
