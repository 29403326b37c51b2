"""DataLoaders of the UG2 splits: samplers (distributed or not), batch sizes, worker seeding and collates.

Training batches (``train_*`` splits) flatten each video's ``AUG.NUM_SAMPLE`` clips: ``inputs``
(B*NS, 3, T, S, S) ordered ``[v1a, v1b, v2a, v2b, ...]``, ``labels``/``index`` (B*NS,), ``probs`` (B*NS, C),
and ``failed``: how many videos failed to decode while making the batch (they were replaced), a 0-d tensor the
engine can sum per epoch (workers are separate processes, so a counter on the dataset would not be seen); with a
teacher enhancement (dual-light distillation) also ``teacher_inputs``, laid out as ``inputs``.

Test batches: ``inputs`` (B, V*C, 3, T, S, S), ``labels``/``index`` (B,), ``names`` list[str] and ``ok``
(B,) bool (False: undecodable video skipped under TEST.SKIP_BAD_VIDEOS, its inputs are zeros).

Distributed evaluation uses :class:`EvalShardSampler`: contiguous shards, no padding, every video on exactly one
process, ``sampler.indices`` telling which.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from nightcrawler.config.checks import loader_workers
from nightcrawler.data.decoders import open_video
from nightcrawler.data.splits import split_info
from nightcrawler.data.ug2 import SPLIT_DEFAULT, OpenFn, build_dataset, build_file_dataset
from nightcrawler.utils.distributed import get_rank, get_world_size
from nightcrawler.utils.seeding import worker_init_fn

logger = logging.getLogger(__name__)
PSEUDO_SPLIT = "train_pseudo_label"


class EvalShardSampler(Sampler[int]):
    """Rank ``rank``'s contiguous share of ``range(num_samples)``, without padding or duplicates.

    Shard sizes differ by at most one; concatenating ``indices`` over ranks in rank order gives
    ``0 .. num_samples-1`` in order.
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}"
            )
        start = rank * num_samples // num_replicas
        stop = (rank + 1) * num_samples // num_replicas
        self.num_samples = num_samples
        self.num_replicas = num_replicas
        self.rank = rank
        self.indices = list(range(start, stop))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """No-op (the order never changes); present so callers can treat every sampler alike."""


def collate_train(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Flattens every item's NUM_SAMPLE clips into one batch (clips of a video stay adjacent)."""
    ns = items[0]["inputs"].shape[0]
    batch = {
        "inputs": torch.cat([it["inputs"] for it in items]),
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long).repeat_interleave(ns),
        "probs": torch.stack([it["probs"] for it in items]).repeat_interleave(ns, dim=0),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long).repeat_interleave(ns),
        "failed": torch.tensor(sum(int(it["failed"]) for it in items), dtype=torch.long),
    }
    if "teacher_inputs" in items[0]:
        batch["teacher_inputs"] = torch.cat([it["teacher_inputs"] for it in items])
    return batch


def collate_test(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stacks test items: one row per video, its V*C clips in the second dimension."""
    return {
        "inputs": torch.stack([it["inputs"] for it in items]),
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "names": [it["name"] for it in items],
        "ok": torch.tensor([bool(it["ok"]) for it in items], dtype=torch.bool),
    }


def default_batch_size(cfg, split: str, world_size: int, views: int, crops: int) -> int:
    """Per-process batch in videos: TRAIN.BATCH_SIZE / world for training splits (must divide), and
    ``max(1, TEST.BATCH_SIZE // (world * views * crops))`` for test splits (TEST.BATCH_SIZE counts clips)."""
    if split_info(split).training:
        total = cfg.TRAIN.BATCH_SIZE
        if total < world_size or total % world_size:
            raise ValueError(
                f"TRAIN.BATCH_SIZE ({total}) must be a positive multiple of the number of processes ({world_size})"
            )
        return total // world_size
    return max(1, cfg.TEST.BATCH_SIZE // (world_size * views * crops))


def build_loader(
    cfg,
    split: str,
    *,
    batch_size: int | None = None,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    enhancement=SPLIT_DEFAULT,
    views: int | None = None,
    crops: int | None = None,
    num_workers: int | None = None,
    open_fn: OpenFn = open_video,
    teacher_enhancement=None,
) -> DataLoader:
    """The DataLoader of ``split``.

    Args:
        batch_size: videos per process and batch (default: :func:`default_batch_size`).
        shuffle: default True for training splits, False for test splits.
        drop_last: default True for training splits, False for test splits. A pseudo-label split smaller than one
            batch (one process) gives one batch per epoch, drawn with replacement.
        enhancement: see :func:`nightcrawler.data.ug2.build_dataset` (``"split"``: the split's own; None: off;
            a list for test splits: every video's clips with each enhancement).
        views, crops: test splits' temporal views and spatial crops (default TEST.NUM_ENSEMBLE_VIEWS/CROPS).
        num_workers: default :func:`~nightcrawler.config.checks.loader_workers` (persistent workers when > 0).
        open_fn: reader factory (tests).
        teacher_enhancement: training splits: batches also carry ``teacher_inputs`` (the same clips made from
            frames with this enhancement; dual-light distillation). None (default): not made.

    With torch.distributed initialised and more than one process, shuffled loaders and training splits use a
    ``DistributedSampler`` (seed RNG_SEED; call ``loader.sampler.set_epoch``), ordered test splits an
    :class:`EvalShardSampler` (always, so ``loader.sampler.indices`` names this process's videos).
    """
    info = split_info(split)
    dataset = build_dataset(
        cfg,
        split,
        enhancement=enhancement,
        views=views,
        crops=crops,
        open_fn=open_fn,
        teacher_enhancement=teacher_enhancement,
    )
    world, rank = get_world_size(), get_rank()
    shuffle = info.training if shuffle is None else shuffle
    drop_last = info.training if drop_last is None else drop_last
    if batch_size is None:
        batch_size = default_batch_size(cfg, split, world, dataset.clips_per_video, 1)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    sampler: Sampler[int]
    if split == PSEUDO_SPLIT and drop_last and world == 1 and 0 < len(dataset) < batch_size:
        # a selection rule kept fewer pseudo labels than one batch (an outcome of the method, not a user's
        # setting): one full batch per epoch, drawn with replacement, so the stage still trains on what was
        # selected with the batch size (and Mixup pairing) of every other stage. The original's zip over an
        # empty pseudo loader would train zero iterations.
        logger.warning(
            "%s: %d videos, fewer than one batch of %d: one batch per epoch, drawn with replacement",
            split, len(dataset), batch_size,
        )  # fmt: skip
        sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size)
    elif shuffle and world > 1:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.RNG_SEED)
    elif shuffle:
        sampler = RandomSampler(dataset)
    elif info.training and world > 1:  # equal batch counts on every rank (DDP steps in lockstep)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
    elif not info.training:
        sampler = EvalShardSampler(len(dataset), world, rank)
    else:
        sampler = SequentialSampler(dataset)

    workers = loader_workers(cfg) if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_train if info.training else collate_test,
        pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY) and torch.cuda.is_available(),
        drop_last=drop_last,
        worker_init_fn=worker_init_fn,
        persistent_workers=workers > 0,
    )


def build_file_loader(
    cfg,
    paths: Sequence[str],
    *,
    batch_size: int,
    enhancement,
    views: int,
    crops: int,
    skip_bad: bool = True,
    num_workers: int | None = None,
    open_fn: OpenFn = open_video,
) -> DataLoader:
    """Test batches of video files given directly, in the given order, on this process alone (inference on
    files outside any split: :mod:`nightcrawler.inference`). Arguments as :func:`build_loader`."""
    dataset = build_file_dataset(
        cfg, paths, enhancement=enhancement, views=views, crops=crops, skip_bad=skip_bad, open_fn=open_fn
    )
    workers = loader_workers(cfg) if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=max(1, batch_size),
        sampler=EvalShardSampler(len(dataset)),
        num_workers=workers,
        collate_fn=collate_test,
        pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY) and torch.cuda.is_available(),
        worker_init_fn=worker_init_fn,
    )
