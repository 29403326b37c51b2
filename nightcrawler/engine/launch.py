"""Starting one job function in every process: one CPU process, one process per GPU, several machines,
``torchrun`` and SLURM.

``launch_job(cfg, init_method, func)`` decides how many processes this machine runs, sets up
``torch.distributed`` (NCCL on GPUs, gloo on the CPU), then calls ``func(cfg)`` in each of them after
per-process logging and seeding.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from yacs.config import CfgNode

from nightcrawler.config.checks import processes_per_machine
from nightcrawler.utils.distributed import find_free_port
from nightcrawler.utils.logging import environment_summary, setup_logging
from nightcrawler.utils.seeding import seed_everything

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessGroupSpec:
    """Where this process sits in the job."""

    world_size: int
    rank: int
    local_rank: int
    init_method: str | None
    backend: str


def _backend(cfg: CfgNode) -> str:
    return cfg.DIST_BACKEND if cfg.NUM_GPUS > 0 else "gloo"


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a SLURM node list such as ``gpu[03-05,07],cpu1`` (-> ``gpu03``)."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot parse SLURM_NODELIST {nodelist!r}")
    prefix, _, ranges = m.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _external_spec(cfg: CfgNode, init_method: str | None) -> ProcessGroupSpec | None:
    """The process layout given by torchrun or SLURM (one task per GPU), or None for a local launch."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env and "LOCAL_RANK" in env:  # torchrun / torch.distributed.run
        return ProcessGroupSpec(
            int(env["WORLD_SIZE"]),
            int(env["RANK"]),
            int(env["LOCAL_RANK"]),
            init_method or "env://",
            _backend(cfg),
        )
    ntasks = int(env.get("SLURM_NTASKS", "1"))
    if "SLURM_PROCID" in env and ntasks > 1:  # srun with one task per GPU (or CPU process)
        if init_method is None:
            host = env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_NODELIST", "127.0.0.1"))
            port = env.get("MASTER_PORT", "29500")
            init_method = f"tcp://{host}:{port}"
        return ProcessGroupSpec(
            ntasks, int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")), init_method, _backend(cfg)
        )
    return None


def cpu_threads(cfg: CfgNode) -> int:
    """Torch threads for one CPU process: CPU_THREADS, else the cores left by the other processes and the
    DataLoader workers (oversubscribed OpenMP threads slow a small model down by 10x and more)."""
    if cfg.CPU_THREADS > 0:
        return cfg.CPU_THREADS
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // processes_per_machine(cfg) - cfg.DATA_LOADER.NUM_WORKERS)


def _run_in_process(func: Callable[[CfgNode], object], cfg: CfgNode, spec: ProcessGroupSpec | None) -> None:
    if cfg.NUM_GPUS == 0:
        torch.set_num_threads(cpu_threads(cfg))
    if spec is not None:
        os.environ["LOCAL_RANK"] = str(spec.local_rank)
        if cfg.NUM_GPUS > 0:
            torch.cuda.set_device(spec.local_rank)
        dist.init_process_group(
            spec.backend, init_method=spec.init_method, world_size=spec.world_size, rank=spec.rank
        )
    rank = spec.rank if spec else 0
    try:
        setup_logging(cfg.OUTPUT_DIR, rank)
        # Each rank gets its own seed (the original gave every rank the same one, so every GPU drew the
        # same mixup parameters); model weights are still identical because DDP broadcasts rank 0's.
        seed_everything(cfg.RNG_SEED + rank)
        if rank == 0:
            logger.info(
                "job %s: world size %d, backend %s, seed %d (+rank), decoding backend %s, torch threads %d",
                getattr(func, "__name__", func),
                spec.world_size if spec else 1,
                spec.backend if spec else "none",
                cfg.RNG_SEED,
                cfg.DATA.DECODING_BACKEND,
                torch.get_num_threads(),
            )
            logger.info("environment: %s", environment_summary())
        func(cfg)
    finally:
        if spec is not None and dist.is_initialized():
            dist.destroy_process_group()


def _spawned_worker(
    local_rank: int,
    func: Callable[[CfgNode], object],
    cfg: CfgNode,
    init_method: str,
    nprocs: int,
) -> None:
    spec = ProcessGroupSpec(
        world_size=nprocs * cfg.NUM_SHARDS,
        rank=cfg.SHARD_ID * nprocs + local_rank,
        local_rank=local_rank,
        init_method=init_method,
        backend=_backend(cfg),
    )
    _run_in_process(func, cfg, spec)


def launch_job(cfg: CfgNode, init_method: str | None, func: Callable[[CfgNode], object]) -> None:
    """Runs ``func(cfg)`` in every process of this machine's share of the job."""
    if cfg.NUM_GPUS > 0 and torch.cuda.device_count() < cfg.NUM_GPUS:
        raise RuntimeError(
            f"NUM_GPUS = {cfg.NUM_GPUS} but this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use NUM_GPUS 0 to run on the CPU"
        )
    external = _external_spec(cfg, init_method)
    if external is not None:
        _run_in_process(func, cfg, external)
        return
    nprocs = processes_per_machine(cfg)
    if nprocs == 1 and cfg.NUM_SHARDS == 1:
        _run_in_process(func, cfg, None)
        return
    if init_method is None:
        if cfg.NUM_SHARDS > 1:
            raise ValueError(
                "NUM_SHARDS > 1 needs --init_method tcp://<host of shard 0>:<port> on every machine"
            )
        init_method = f"tcp://127.0.0.1:{find_free_port()}"
    mp.spawn(_spawned_worker, args=(func, cfg, init_method, nprocs), nprocs=nprocs, join=True)


def distributed_selftest(cfg: CfgNode) -> None:
    """All-reduces ``rank + 1`` and writes what each rank saw to ``OUTPUT_DIR/selftest_rank{r}.json``.

    Checks that the process group, the backend and the file system work before a long job.
    """
    import json

    from nightcrawler.utils.distributed import get_rank, get_world_size, is_dist

    rank, world = get_rank(), get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.NUM_GPUS > 0 else torch.device("cpu")
    value = torch.tensor([float(rank + 1)], device=device)
    if is_dist():
        dist.all_reduce(value)
    expected = world * (world + 1) / 2
    result = {"rank": rank, "world_size": world, "all_reduce": value.item(), "expected": expected}
    with open(os.path.join(cfg.OUTPUT_DIR, f"selftest_rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
    if value.item() != expected:
        raise RuntimeError(f"distributed self-test failed on rank {rank}: {result}")
    logger.info("distributed self-test passed: %s", result)
