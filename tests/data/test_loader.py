"""Loaders: batch layout of both collates, batch sizes, samplers (incl. simulated ranks), workers, seeding."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler, RandomSampler, get_worker_info

from nightcrawler.data import loader as loader_mod
from nightcrawler.data.loader import (
    EvalShardSampler,
    build_loader,
    collate_test,
    collate_train,
    default_batch_size,
)
from nightcrawler.utils.seeding import seed_everything, worker_init_fn
from tests.data.test_ug2 import _layout, fake_open

VIDEOS = {
    "Drink_001.mp4": (40,),
    "Jump_001.avi": (30,),
    "Drink_dry_001.avi": (50,),
    "0.mp4": (20,),
    "1.mp4": (25,),
    "Wave_1_1.mp4": (33,),
}


def _cfg(tmp_path):
    cfg = _layout(tmp_path)
    cfg.DATA_LOADER.NUM_WORKERS = 0
    cfg.AUG.NUM_SAMPLE = 2
    cfg.TRAIN.BATCH_SIZE = 2
    cfg.TEST.NUM_ENSEMBLE_VIEWS = 2
    cfg.TEST.NUM_SPATIAL_CROPS = 3
    cfg.TEST.BATCH_SIZE = 12
    return cfg


def test_collate_train_flattens_samples_video_by_video():
    items = [
        {
            "inputs": torch.full((2, 3, 4, 8, 8), float(v)) + torch.arange(2.0).view(2, 1, 1, 1, 1) / 10,
            "label": 3 + v,
            "index": 10 + v,
            "probs": torch.full((11,), float(v)),
            "failed": v,
        }
        for v in range(3)
    ]
    batch = collate_train(items)
    assert batch["inputs"].shape == (6, 3, 4, 8, 8)
    assert [round(float(x[0, 0, 0, 0]), 1) for x in batch["inputs"]] == [0.0, 0.1, 1.0, 1.1, 2.0, 2.1]
    assert batch["labels"].tolist() == [3, 3, 4, 4, 5, 5]
    assert batch["index"].tolist() == [10, 10, 11, 11, 12, 12]
    assert batch["probs"].shape == (6, 11) and batch["probs"][:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["failed"].item() == 3 and batch["failed"].dim() == 0


def test_collate_test_stacks_videos():
    items = [
        {"inputs": torch.zeros(6, 3, 4, 8, 8), "label": -1, "index": i, "name": f"{i}.mp4", "ok": i != 1}
        for i in range(2)
    ]
    batch = collate_test(items)
    assert batch["inputs"].shape == (2, 6, 3, 4, 8, 8)
    assert batch["labels"].tolist() == [-1, -1] and batch["index"].tolist() == [0, 1]
    assert batch["names"] == ["0.mp4", "1.mp4"] and batch["ok"].tolist() == [True, False]


def test_training_loader_batches(tmp_path):
    cfg = _cfg(tmp_path)
    loader = build_loader(cfg, "train_label", open_fn=fake_open(VIDEOS))
    assert isinstance(loader.sampler, RandomSampler) and loader.drop_last and loader.batch_size == 2
    assert len(loader) == 1  # 3 videos, batches of 2, last one dropped
    batch = next(iter(loader))
    assert batch["inputs"].shape == (4, 3, 4, 16, 16) and batch["inputs"].dtype == torch.float32
    assert batch["labels"].shape == (4,) and torch.equal(batch["labels"][0::2], batch["labels"][1::2])
    assert torch.equal(batch["index"][0::2], batch["index"][1::2])
    assert batch["probs"].shape == (4, 11) and batch["failed"].item() == 0


def test_test_loader_batches_in_list_order(tmp_path):
    cfg = _cfg(tmp_path)
    loader = build_loader(cfg, "total_unlabel", open_fn=fake_open({**VIDEOS}))
    assert loader.batch_size == 2  # TEST.BATCH_SIZE 12 clips / (1 process x 2 views x 3 crops)
    assert isinstance(loader.sampler, EvalShardSampler) and loader.sampler.indices == [0, 1, 2]
    batches = list(loader)
    assert [b["inputs"].shape for b in batches] == [(2, 6, 3, 4, 16, 16), (1, 6, 3, 4, 16, 16)]
    assert [n for b in batches for n in b["names"]] == ["0.mp4", "1.mp4", "Wave/Wave_1_1.mp4"]
    assert [i for b in batches for i in b["index"].tolist()] == [0, 1, 2]
    assert all(b["ok"].all() for b in batches)
    one = build_loader(
        cfg, "arid", views=1, crops=1, batch_size=5, enhancement=None, open_fn=fake_open(VIDEOS)
    )
    assert one.batch_size == 5 and one.dataset.enhancement.spec == "none"
    assert next(iter(one))["inputs"].shape == (1, 1, 3, 4, 16, 16)


def test_batch_sizes():
    from nightcrawler.config import get_cfg

    cfg = get_cfg()
    cfg.TRAIN.BATCH_SIZE, cfg.TEST.BATCH_SIZE = 32, 64
    assert default_batch_size(cfg, "train_label", 4, 3, 3) == 8
    assert default_batch_size(cfg, "test", 4, 3, 3) == 1  # 64 // 36
    assert default_batch_size(cfg, "test", 2, 1, 3) == 10
    assert default_batch_size(cfg, "arid", 1, 1, 1) == 64
    with pytest.raises(ValueError, match="TRAIN.BATCH_SIZE"):
        default_batch_size(cfg, "train_unlabel", 3, 1, 1)


@pytest.mark.parametrize("num_samples", [0, 1, 7, 10, 3103])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_eval_shards_cover_every_index_exactly_once(num_samples, world):
    shards = [EvalShardSampler(num_samples, world, rank) for rank in range(world)]
    joined = [i for s in shards for i in s]
    assert joined == list(range(num_samples))  # no padding, no duplicate, rank order = list order
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == num_samples
    assert all(list(s) == s.indices for s in shards)


def test_simulated_ranks_pick_distributed_samplers(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    cfg.TRAIN.BATCH_SIZE = 4
    monkeypatch.setattr(loader_mod, "get_world_size", lambda: 2)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(loader_mod, "get_rank", lambda rank=rank: rank)
        train = build_loader(cfg, "train_unlabel", open_fn=fake_open(VIDEOS))
        assert isinstance(train.sampler, DistributedSampler)
        assert (train.sampler.num_replicas, train.sampler.rank, train.batch_size) == (2, rank, 2)
        ordered = build_loader(cfg, "train_label", shuffle=False, open_fn=fake_open(VIDEOS))
        assert isinstance(ordered.sampler, DistributedSampler) and not ordered.sampler.shuffle
        test = build_loader(cfg, "dark_unlabel", open_fn=fake_open(VIDEOS))
        assert isinstance(test.sampler, EvalShardSampler) and test.batch_size == 1  # 12 // (2 * 6)
        seen += [i for b in test for i in b["index"].tolist()]
    assert seen == [0, 1]


def test_worker_processes_report_failures_and_persist(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.TRAIN.BATCH_SIZE = 3
    videos = {k: v for k, v in VIDEOS.items() if k != "Jump_001.avi"}  # one training video is broken
    loader = build_loader(cfg, "train_label", num_workers=1, shuffle=False, open_fn=fake_open(videos))
    assert loader.persistent_workers and loader.worker_init_fn is worker_init_fn
    batch = next(iter(loader))
    assert batch["failed"].item() == 1
    assert batch["index"].tolist()[2:4] != [1, 1]  # the broken video was replaced by another one


def test_auto_workers_resolve_per_machine(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    cfg.DATA_LOADER.NUM_WORKERS = -1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    loader = build_loader(cfg, "train_label", open_fn=fake_open(VIDEOS))
    assert loader.num_workers == 1 and loader.persistent_workers
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert build_loader(cfg, "test", open_fn=fake_open(VIDEOS)).num_workers == 0


class DrawRecorder:
    """open_fn serving fake videos that first records, in whichever process opens them, one draw each from
    Python's ``random``, NumPy's and torch's global generators, with the worker id and torch's initial seed,
    as a JSON line in ``folder/worker<id>.jsonl`` (workers are separate processes: files, not lists)."""

    def __init__(self, videos: dict, folder):
        self.open = fake_open(videos)
        self.folder = folder

    def __call__(self, path, backend="auto", threads=1):
        info = get_worker_info()
        draw = {
            "worker": -1 if info is None else info.id,
            "video": path.rsplit("/", 1)[-1],
            "initial_seed": torch.initial_seed(),
            "random": random.random(),
            "numpy": float(np.random.rand()),
            "torch": float(torch.rand(())),
        }
        with open(self.folder / f"worker{draw['worker']}.jsonl", "a") as f:
            f.write(json.dumps(draw) + "\n")
        return self.open(path, backend, threads)


def _seeded_epochs(cfg, folder, epochs=2):
    """Batches of ``epochs`` epochs of the training loader (2 workers, one video per batch) and each worker's
    draws, after seeding the process with RNG_SEED as the launcher does (rank 0)."""
    folder.mkdir()
    seed_everything(cfg.RNG_SEED)
    loader = build_loader(
        cfg, "train_label", batch_size=1, num_workers=2, open_fn=DrawRecorder(VIDEOS, folder)
    )
    batches = [batch for _ in range(epochs) for batch in loader]
    del loader  # stops the persistent workers
    draws = {
        w: [json.loads(line) for line in (folder / f"worker{w}.jsonl").read_text().splitlines()]
        for w in (0, 1)
    }
    return batches, draws


def test_workers_are_seeded_from_rng_seed_and_differ_from_each_other(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.AUG.ENABLE, cfg.AUG.RE_PROB = True, 1.0  # erasing fills from torch's and reads random's generator
    cfg.RNG_SEED = 7
    batches, draws = _seeded_epochs(cfg, tmp_path / "a")
    assert len(batches) == 6  # 3 videos x 2 epochs, batches alternate between the two workers
    assert [len(draws[0]), len(draws[1])] == [4, 2]
    assert sorted(b["index"][0].item() for b in batches[:3]) == [0, 1, 2]  # each video once an epoch

    # the same seed: the same videos, clips, augmentations and draws in every worker
    again, again_draws = _seeded_epochs(cfg, tmp_path / "b")
    for batch, other in zip(batches, again, strict=True):
        assert batch.keys() == other.keys()
        for key in batch:
            assert torch.equal(batch[key], other[key]), key
    assert again_draws == draws

    # the two workers draw different numbers from every generator; each worker's random and numpy
    # generators are seeded by worker_init_fn from its torch seed
    first = {w: draws[w][0] for w in (0, 1)}
    assert first[0]["initial_seed"] != first[1]["initial_seed"]
    for generator in ("random", "numpy", "torch"):
        assert first[0][generator] != first[1][generator], generator
    for w in (0, 1):
        seed = first[w]["initial_seed"] % 2**32
        assert first[w]["random"] == random.Random(seed).random()
        assert first[w]["numpy"] == np.random.RandomState(seed).rand()
    # persistent workers continue their streams: the second epoch draws anew
    assert draws[0][2]["random"] != draws[0][0]["random"]
    assert not torch.equal(batches[3]["inputs"], batches[0]["inputs"])

    # another RNG_SEED: other worker seeds, draws and clips
    cfg.RNG_SEED = 8
    other, other_draws = _seeded_epochs(cfg, tmp_path / "c")
    assert other_draws[0][0]["initial_seed"] != first[0]["initial_seed"]
    for w in (0, 1):
        for generator in ("random", "numpy", "torch"):
            assert other_draws[w][0][generator] != draws[w][0][generator], (w, generator)
    assert any(not torch.equal(b["inputs"], o["inputs"]) for b, o in zip(batches, other, strict=True))


def test_a_pseudo_split_smaller_than_one_batch_gives_one_batch_drawn_with_replacement(tmp_path):
    """A selection rule that kept fewer pseudo labels than a batch still trains on them (one full batch per
    epoch); a labelled split that small stays empty, for the trainer to refuse."""
    cfg = _cfg(tmp_path)
    (tmp_path / "stage1.csv").write_text("1.mp4,3\n")
    cfg.DATA.PSEUDO_CSV = "stage1.csv"
    cfg.TRAIN.BATCH_SIZE = 4
    pseudo = build_loader(cfg, "train_pseudo_label", open_fn=fake_open(VIDEOS))
    assert isinstance(pseudo.sampler, RandomSampler) and pseudo.sampler.replacement
    assert len(pseudo) == 1
    batch = next(iter(pseudo))
    assert batch["inputs"].shape[0] == 8  # 4 draws x NUM_SAMPLE 2, all of the one video
    assert batch["labels"].tolist() == [3] * 8 and batch["index"].tolist() == [0] * 8
    assert len(build_loader(cfg, "train_label", open_fn=fake_open(VIDEOS))) == 0  # 3 videos < 4
