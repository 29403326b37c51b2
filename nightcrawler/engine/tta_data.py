"""The test loader of one decoding pass: every video decoded once, its ``V x C`` clips transformed with one or
several gammas.

One gamma is the data package's own test loader. Several gammas stack one test dataset per gamma; they share a
reader factory that keeps the last video's decoded frames, so the datasets after the first transform the
frames the first one decoded instead of decoding again. Items then hold ``G * V * C`` clips, gamma-major.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nightcrawler.data.decoders import open_video
from nightcrawler.utils.distributed import get_rank, get_world_size
from nightcrawler.utils.seeding import worker_init_fn


class _ReplayReader:
    """A reader over frames already decoded from ``path`` (falls back to decoding unseen indices)."""

    def __init__(self, path: str, num_frames: int, frames: dict[tuple[int, ...], torch.Tensor], reopen):
        self.path = path
        self.num_frames = num_frames
        self._frames = frames
        self._reopen = reopen

    def __enter__(self) -> _ReplayReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release."""

    def frames_at(self, indices: Iterable[int]) -> torch.Tensor:
        key = tuple(int(i) for i in indices)
        if key not in self._frames:
            with self._reopen() as reader:
                self._frames[key] = reader.frames_at(list(key))
        return self._frames[key]


class _RecordingReader:
    """Wraps a real reader and records what it decodes into the shared cache."""

    def __init__(self, reader, cache: dict[tuple[int, ...], torch.Tensor]):
        self._reader = reader
        self._cache = cache
        self.path = reader.path
        self.num_frames = reader.num_frames

    def __enter__(self) -> _RecordingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def frames_at(self, indices: Iterable[int]) -> torch.Tensor:
        key = tuple(int(i) for i in indices)
        frames = self._reader.frames_at(list(key))
        self._cache[key] = frames
        return frames


class SharedDecodeOpen:
    """A reader factory ``(path, backend, threads) -> reader`` that decodes each video once while it is the most
    recent one: a second open of the same path replays the frames already read."""

    def __init__(self, open_fn=open_video):
        self.open_fn = open_fn
        self._path: str | None = None
        self._num_frames = 0
        self._frames: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, path: str, backend: str = "auto", threads: int = 1):
        path = str(path)
        if path == self._path:
            return _ReplayReader(
                path, self._num_frames, self._frames, lambda: self.open_fn(path, backend, threads)
            )
        reader = self.open_fn(path, backend, threads)  # raises for undecodable files: nothing is cached then
        self._path, self._num_frames, self._frames = path, int(reader.num_frames), {}
        return _RecordingReader(reader, self._frames)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers start with an empty cache
        return {"open_fn": self.open_fn, "_path": None, "_num_frames": 0, "_frames": {}}


class MultiGammaTestSet(Dataset):
    """Test items whose clips are those of ``datasets`` (same split, views and crops; one gamma each)
    concatenated gamma-major; ``ok`` is False when any of them failed."""

    def __init__(self, datasets: Sequence[Dataset]):
        if not datasets:
            raise ValueError("at least one dataset is needed")
        sizes = {len(d) for d in datasets}
        if len(sizes) != 1:
            raise ValueError(f"the per-gamma datasets differ in length: {sorted(sizes)}")
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return len(self.datasets[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        items = [d[index] for d in self.datasets]
        return {
            **items[0],
            "inputs": torch.cat([it["inputs"] for it in items]),
            "ok": all(bool(it["ok"]) for it in items),
        }


def build_pass_loader(
    cfg,  # noqa: ANN001 (yacs CfgNode)
    split: str,
    *,
    views: int,
    crops: int,
    gammas: Sequence[float | None],
    batch_size: int,
    open_fn=open_video,
) -> DataLoader:
    """The ordered, non-padding test loader of one pass (batch size in videos per process)."""
    from nightcrawler.data import EvalShardSampler, build_dataset, build_loader, collate_test

    if len(gammas) == 1:
        return build_loader(
            cfg,
            split,
            batch_size=batch_size,
            shuffle=False,
            drop_last=False,
            gamma=gammas[0],
            views=views,
            crops=crops,
            open_fn=open_fn,
        )
    shared = SharedDecodeOpen(open_fn)
    dataset = MultiGammaTestSet(
        [build_dataset(cfg, split, gamma=g, views=views, crops=crops, open_fn=shared) for g in gammas]
    )
    workers = cfg.DATA_LOADER.NUM_WORKERS
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EvalShardSampler(len(dataset), get_world_size(), get_rank()),
        num_workers=workers,
        collate_fn=collate_test,
        pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY) and torch.cuda.is_available(),
        drop_last=False,
        worker_init_fn=worker_init_fn,
    )


def bad_mask(batch: dict[str, Any]) -> np.ndarray:
    """Which videos of a test batch failed to decode (``ok`` False; only under TEST.SKIP_BAD_VIDEOS)."""
    ok = batch.get("ok")
    if ok is None:
        return np.zeros(len(batch["names"]), dtype=bool)
    return ~torch.as_tensor(ok).bool().numpy()
