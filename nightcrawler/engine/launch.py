"""Starting one job function in every process: one CPU process, one process per GPU, several machines,
``torchrun`` and SLURM (one task per node, or one task per GPU).

``launch_job(cfg, init_method, func)`` decides how many processes this machine runs, sets up
``torch.distributed`` (NCCL on GPUs, gloo on the CPU), then calls ``func(cfg)`` in each of them after
per-process logging and seeding.
"""

from __future__ import annotations

import datetime
import logging
import os
import pickle
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from yacs.config import CfgNode

from nightcrawler.config.checks import (
    apply_world_layout,
    loader_workers,
    machine_cores,
    processes_per_machine,
)
from nightcrawler.config.loading import ConfigError
from nightcrawler.utils.distributed import find_free_port, job_device
from nightcrawler.utils.errors import exit_code_for
from nightcrawler.utils.imports import import_modules
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
    local_world_size: int = 1  # processes on this machine


@dataclass(frozen=True)
class SlurmLayout:
    """How this SLURM task fits the job: one rank itself, or the launcher of one machine's processes."""

    num_nodes: int
    node_id: int
    procs_per_node: int
    init_method: str
    task_per_process: bool  # True: this task is rank ``rank``; False: it spawns ``procs_per_node`` processes
    rank: int = 0  # this task's rank (one task per process), or the first rank of its node
    local_rank: int = 0

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.procs_per_node


def _backend(cfg: CfgNode) -> str:
    return cfg.DIST_BACKEND if cfg.NUM_GPUS > 0 else "gloo"


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a SLURM node list: ``gpu[03-05,07],cpu1`` -> ``gpu03``, ``a,b`` -> ``a``,
    ``rack[1-2]-n[7-8]`` -> ``rack1-n7``."""
    host, depth = [], 0
    for ch in nodelist.strip():
        if ch == "," and depth == 0:
            break
        depth += (ch == "[") - (ch == "]")
        host.append(ch)
    text = "".join(host)
    if depth != 0 or not text or text.startswith("["):
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    # every bracket group [01-04,07] -> its first number, 01
    first = re.sub(r"\[([^\],-]+)[^\]]*\]", r"\1", text)
    if "[" in first or "]" in first:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    return first


def _env_int(env: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` set in ``env`` as an int (``SLURM_NTASKS_PER_NODE=4(x2)`` counts as unset)."""
    for name in names:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def slurm_layout(
    procs_per_node: int, init_method: str | None, env: Mapping[str, str] | None = None
) -> SlurmLayout | None:
    """The job layout SLURM gives this task, or None outside a multi-task SLURM step.

    Two set-ups are understood, with ``procs_per_node`` = NUM_GPUS (or NUM_CPU_PROCESSES on the CPU):
    one task per node (``SLURM_NTASKS`` = nodes): machine SLURM_NODEID of SLURM_NNODES, which spawns its
    processes like a local multi-GPU run; one task per process (``SLURM_NTASKS`` = nodes x procs_per_node, or
    ``SLURM_NTASKS_PER_NODE`` = procs_per_node): rank SLURM_PROCID on device SLURM_LOCALID. Anything else raises
    ConfigError. The rendezvous is ``init_method`` when given, else ``tcp://`` MASTER_ADDR (default: the first
    host of SLURM_JOB_NODELIST / SLURM_NODELIST) and MASTER_PORT (default: 29500 + SLURM_JOB_ID % 10000, the
    same on every node).
    """
    env = os.environ if env is None else env
    if "SLURM_PROCID" not in env:
        return None
    nodes = _env_int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES") or 1
    ntasks = _env_int(env, "SLURM_NTASKS", "SLURM_NPROCS") or 1
    per_node = _env_int(env, "SLURM_NTASKS_PER_NODE")
    if nodes == 1 and ntasks == 1:
        return None  # a single task on a single node: a plain local launch
    per_node_text = env.get("SLURM_NTASKS_PER_NODE", "unset")
    found = f"SLURM_NTASKS={ntasks}, SLURM_NNODES={nodes}, SLURM_NTASKS_PER_NODE={per_node_text}"
    if ntasks == nodes * procs_per_node and per_node in (None, procs_per_node):
        task_per_process = True
    elif ntasks == nodes and per_node in (None, 1):
        task_per_process = False
    else:
        raise ConfigError(
            f"SLURM layout not understood: {found} with {procs_per_node} process(es) per machine (NUM_GPUS, or "
            f"NUM_CPU_PROCESSES on the CPU); expected one task per node (SLURM_NTASKS = SLURM_NNODES = {nodes}, "
            f"e.g. srun --ntasks-per-node=1) or one task per process (SLURM_NTASKS = {nodes * procs_per_node}, "
            f"srun --ntasks-per-node={procs_per_node})"
        )
    node_id = _env_int(env, "SLURM_NODEID") or 0
    rank = _env_int(env, "SLURM_PROCID") or 0
    local_rank = _env_int(env, "SLURM_LOCALID") or 0
    if node_id >= nodes or rank >= ntasks or (task_per_process and local_rank >= procs_per_node):
        raise ConfigError(
            f"SLURM task out of range: SLURM_NODEID={node_id}, SLURM_PROCID={rank}, SLURM_LOCALID={local_rank} "
            f"with {found}"
        )
    if init_method is None:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        host = env.get("MASTER_ADDR") or (first_slurm_host(nodelist) if nodelist else None)
        if host is None:
            raise ConfigError(f"{found}: set MASTER_ADDR or SLURM_JOB_NODELIST, or pass --init_method")
        port = env.get("MASTER_PORT") or str(29500 + (_env_int(env, "SLURM_JOB_ID") or 0) % 10000)
        init_method = f"tcp://{host}:{port}"
    return SlurmLayout(
        num_nodes=nodes,
        node_id=node_id,
        procs_per_node=procs_per_node,
        init_method=init_method,
        task_per_process=task_per_process,
        rank=rank if task_per_process else node_id * procs_per_node,
        local_rank=local_rank if task_per_process else 0,
    )


def apply_slurm_layout(cfg: CfgNode, layout: SlurmLayout) -> None:
    """Sets NUM_SHARDS / SHARD_ID from SLURM; a NUM_SHARDS other than 1 must match the node count."""
    if cfg.NUM_SHARDS not in (1, layout.num_nodes):
        raise ConfigError(
            f"NUM_SHARDS = {cfg.NUM_SHARDS} but SLURM runs the job on {layout.num_nodes} node(s) "
            f"(world size {layout.world_size} = {layout.procs_per_node} process(es) per machine x nodes)"
        )
    cfg.NUM_SHARDS = layout.num_nodes
    cfg.SHARD_ID = layout.node_id


def _torchrun_spec(cfg: CfgNode, init_method: str | None) -> ProcessGroupSpec | None:
    """The process layout given by torchrun (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), or None."""
    env = os.environ
    if not ("WORLD_SIZE" in env and "RANK" in env and "LOCAL_RANK" in env):
        return None
    world = int(env["WORLD_SIZE"])
    return ProcessGroupSpec(
        world,
        int(env["RANK"]),
        int(env["LOCAL_RANK"]),
        init_method or "env://",
        _backend(cfg),
        int(env.get("LOCAL_WORLD_SIZE", world)),
    )


def gpu_index(local_rank: int, visible: int) -> int:
    """The CUDA device of a process: ``local_rank``, or 0 when the task sees exactly one GPU (SLURM binding
    one GPU to each task)."""
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    raise RuntimeError(f"local rank {local_rank} has no CUDA device: this process sees {visible}")


def cpu_threads(cfg: CfgNode, local_processes: int | None = None) -> int:
    """Torch threads for one CPU process: CPU_THREADS, else the cores left by the other processes of this
    machine (``local_processes``, default from the config) and the DataLoader workers (oversubscribed OpenMP
    threads slow a small model down by 10x and more)."""
    if cfg.CPU_THREADS > 0:
        return cfg.CPU_THREADS
    procs = local_processes or processes_per_machine(cfg)
    return max(1, machine_cores() // procs - loader_workers(cfg, procs))


def _run_in_process(func: Callable[[CfgNode], object], cfg: CfgNode, spec: ProcessGroupSpec | None) -> None:
    import_modules(cfg.IMPORTS)  # spawned processes register the user's models / enhancements again
    local_processes = spec.local_world_size if spec else 1
    if cfg.NUM_GPUS == 0:
        torch.set_num_threads(cpu_threads(cfg, local_processes))
    if spec is not None:
        os.environ["LOCAL_RANK"] = str(spec.local_rank)
        if cfg.NUM_GPUS > 0:
            torch.cuda.set_device(gpu_index(spec.local_rank, torch.cuda.device_count()))
        # a process that dies or hangs makes the others' collectives fail after this long instead of waiting
        # forever (mp.spawn also terminates the other local processes as soon as one fails)
        timeout = datetime.timedelta(seconds=max(1, int(cfg.TRAIN.DIST_TIMEOUT_S)))
        dist.init_process_group(
            spec.backend,
            init_method=spec.init_method,
            world_size=spec.world_size,
            rank=spec.rank,
            timeout=timeout,
        )
    rank = spec.rank if spec else 0
    try:
        if spec is not None:
            # the real layout: batch sizes against the world size, NUM_SHARDS = machines (LR scaling)
            apply_world_layout(cfg, spec.world_size, spec.local_world_size, spec.rank)
        setup_logging(cfg.OUTPUT_DIR, rank)
        # Each rank gets its own seed (the original gave every rank the same one, so every GPU drew the
        # same mixup parameters); model weights are still identical because DDP broadcasts rank 0's.
        seed_everything(cfg.RNG_SEED + rank)
        if rank == 0:
            logger.info(
                "job %s: world size %d on %d machine(s), backend %s, seed %d (+rank), decoding backend %s, "
                "torch threads %d, DataLoader workers %d",
                getattr(func, "__name__", func),
                spec.world_size if spec else 1,
                cfg.NUM_SHARDS,
                spec.backend if spec else "none",
                cfg.RNG_SEED,
                cfg.DATA.DECODING_BACKEND,
                torch.get_num_threads(),
                loader_workers(cfg, local_processes),
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
    error_dir: str | None = None,
) -> None:
    spec = ProcessGroupSpec(
        world_size=nprocs * cfg.NUM_SHARDS,
        rank=cfg.SHARD_ID * nprocs + local_rank,
        local_rank=local_rank,
        init_method=init_method,
        backend=_backend(cfg),
        local_world_size=nprocs,
    )
    try:
        _run_in_process(func, cfg, spec)
    except Exception as exc:
        if error_dir is not None:
            save_worker_traceback(error_dir, spec.rank, exc)
            if exit_code_for(exc) is not None:
                save_user_error(error_dir, local_rank, exc)
        raise


def save_worker_traceback(error_dir: str, rank: int, exc: BaseException) -> None:
    """Writes a failing worker's traceback to ``error_dir`` at once, so the parent can show the rank that
    failed first (the others then fail too, with "connection closed by peer", and may be the one torch reports)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    tmp = os.path.join(error_dir, f".rank{rank}.txt.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, os.path.join(error_dir, f"rank{rank}.txt"))


def first_worker_traceback(error_dir: str) -> tuple[int, str] | None:
    """``(rank, traceback text)`` of the worker that failed first, or None."""
    saved = [os.path.join(error_dir, n) for n in os.listdir(error_dir) if re.fullmatch(r"rank\d+\.txt", n)]
    if not saved:
        return None
    path = min(saved, key=lambda q: (os.stat(q).st_mtime_ns, q))
    with open(path, encoding="utf-8") as f:
        return int(re.sub(r"\D", "", os.path.basename(path))), f.read()


def save_user_error(error_dir: str, local_rank: int, exc: BaseException) -> None:
    """Pickles a worker's user error to ``error_dir`` so the parent can raise it again (torch only passes
    the child's traceback text up); an error that does not pickle is left to the traceback."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
    except Exception:
        return
    tmp = os.path.join(error_dir, f".rank{local_rank}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(error_dir, f"rank{local_rank}.pkl"))


def first_user_error(error_dir: str) -> BaseException | None:
    """The user error saved first by a worker (the others usually fail because of it), or None."""
    saved = [os.path.join(error_dir, n) for n in os.listdir(error_dir) if n.endswith(".pkl")]
    for path in sorted(saved, key=lambda q: (os.stat(q).st_mtime_ns, q)):
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except Exception:
            continue
    return None


def spawn_workers(func: Callable[[CfgNode], object], cfg: CfgNode, init_method: str, nprocs: int) -> None:
    """``mp.spawn`` of the workers; a worker's user error (ConfigError, VideoDecodeError ...) is raised
    again here with its class and message, so the entry point reports it like a single-process run."""
    with tempfile.TemporaryDirectory(prefix="nightcrawler-errors-") as error_dir:
        try:
            mp.spawn(
                _spawned_worker, args=(func, cfg, init_method, nprocs, error_dir), nprocs=nprocs, join=True
            )
        except Exception as spawn_exc:
            user_error = first_user_error(error_dir)
            if user_error is not None:
                raise user_error from spawn_exc
            first = first_worker_traceback(error_dir)
            if first is not None:
                sys.stderr.write(f"process {first[0]} failed first:\n{first[1]}")
                sys.stderr.flush()
            raise


def launch_job(cfg: CfgNode, init_method: str | None, func: Callable[[CfgNode], object]) -> None:
    """Runs ``func(cfg)`` in every process of this machine's share of the job.

    The layout comes from torchrun's environment, else from SLURM's (:func:`slurm_layout`), else from
    NUM_GPUS (or NUM_CPU_PROCESSES), NUM_SHARDS and SHARD_ID.
    """
    external = _torchrun_spec(cfg, init_method)
    if external is not None:
        _run_in_process(func, cfg, external)
        return
    nprocs = processes_per_machine(cfg)
    slurm = slurm_layout(nprocs, init_method)
    if slurm is not None:
        apply_slurm_layout(cfg, slurm)
        if slurm.task_per_process:
            spec = ProcessGroupSpec(
                slurm.world_size, slurm.rank, slurm.local_rank, slurm.init_method, _backend(cfg), nprocs
            )
            _run_in_process(func, cfg, spec)
            return
        init_method = slurm.init_method
    if cfg.NUM_GPUS > 0 and torch.cuda.device_count() < cfg.NUM_GPUS:
        raise RuntimeError(
            f"NUM_GPUS = {cfg.NUM_GPUS} but this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use NUM_GPUS 0 to run on the CPU"
        )
    if nprocs == 1 and cfg.NUM_SHARDS == 1:
        _run_in_process(func, cfg, None)
        return
    if init_method is None:
        if cfg.NUM_SHARDS > 1:
            raise ValueError(
                "NUM_SHARDS > 1 needs --init_method tcp://<host of shard 0>:<port> on every machine"
            )
        init_method = f"tcp://127.0.0.1:{find_free_port()}"
    spawn_workers(func, cfg, init_method, nprocs)


def distributed_selftest(cfg: CfgNode) -> None:
    """All-reduces ``rank + 1`` and writes what each rank saw to ``OUTPUT_DIR/selftest_rank{r}.json``.

    Checks that the process group, the backend and the file system work before a long job.
    """
    import json

    from nightcrawler.utils.distributed import get_rank, get_world_size, is_dist

    rank, world = get_rank(), get_world_size()
    device = job_device(cfg.NUM_GPUS)
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
