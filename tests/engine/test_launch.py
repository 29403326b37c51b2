"""How the launcher reads SLURM and torchrun layouts, and what it checks once the process group exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nightcrawler.config import ConfigError, get_cfg
from nightcrawler.config.checks import apply_world_layout, loader_workers, scaled_learning_rates
from nightcrawler.engine.launch import (
    apply_slurm_layout,
    cpu_threads,
    first_slurm_host,
    gpu_index,
    slurm_layout,
)
from nightcrawler.utils.distributed import find_free_port
from tests.conftest import REPO_ROOT

LAUNCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def slurm_env(monkeypatch):
    """A clean environment without SLURM or torchrun variables; returns a setter for SLURM ones."""
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in LAUNCH_ENV:
            monkeypatch.delenv(name)

    def set_env(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))

    return set_env


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("gpu[01-04,07]", "gpu01"),
        ("a,b", "a"),
        ("gpu[03-05,07],cpu1", "gpu03"),
        ("gpu[07,01-04]", "gpu07"),
        ("node7", "node7"),
        (" n-[12-13] ", "n-12"),
        ("rack[1-2]-n[7-8],x", "rack1-n7"),
    ],
)
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


@pytest.mark.parametrize("nodelist", ["", "gpu[01-04", "[1-2]", "gpu[]"])
def test_first_slurm_host_rejects_malformed_lists(nodelist):
    with pytest.raises(ValueError, match="SLURM node list"):
        first_slurm_host(nodelist)


def test_one_task_per_node_spawns_the_gpus_of_each_node(slurm_env):
    slurm_env(
        SLURM_PROCID=1,
        SLURM_LOCALID=0,
        SLURM_NODEID=1,
        SLURM_NNODES=2,
        SLURM_NTASKS=2,
        SLURM_NTASKS_PER_NODE=1,
        SLURM_JOB_NODELIST="gpu[03-04]",
        SLURM_NODELIST="other[1-2]",
        SLURM_JOB_ID=1234,
    )
    layout = slurm_layout(4, None)
    assert layout is not None and not layout.task_per_process
    assert (layout.num_nodes, layout.node_id, layout.procs_per_node, layout.world_size) == (2, 1, 4, 8)
    # JOB_NODELIST wins over NODELIST; the port follows the job id, so every node computes the same one
    assert layout.init_method == "tcp://gpu03:30734"
    cfg = get_cfg()
    cfg.NUM_GPUS = 4
    apply_slurm_layout(cfg, layout)
    assert (cfg.NUM_SHARDS, cfg.SHARD_ID) == (2, 1)


def test_one_task_per_gpu_is_one_rank(slurm_env):
    slurm_env(
        SLURM_PROCID=5,
        SLURM_LOCALID=1,
        SLURM_NODEID=1,
        SLURM_NNODES=2,
        SLURM_NTASKS=8,
        SLURM_NTASKS_PER_NODE=4,
        SLURM_NODELIST="a,b",
        MASTER_PORT=12345,
    )
    layout = slurm_layout(4, None)
    assert layout is not None and layout.task_per_process
    assert (layout.rank, layout.local_rank, layout.world_size, layout.node_id) == (5, 1, 8, 1)
    assert layout.init_method == "tcp://a:12345"


def test_one_task_per_gpu_without_tasks_per_node(slurm_env):
    slurm_env(SLURM_PROCID=3, SLURM_LOCALID=3, SLURM_NNODES=1, SLURM_NTASKS=4, MASTER_ADDR="head")
    layout = slurm_layout(4, "tcp://given:1")
    assert layout is not None and layout.task_per_process
    assert (layout.rank, layout.local_rank, layout.world_size) == (3, 3, 4)
    assert layout.init_method == "tcp://given:1"  # an explicit --init_method wins over MASTER_ADDR


def test_master_addr_overrides_the_node_list(slurm_env):
    slurm_env(SLURM_PROCID=0, SLURM_NNODES=2, SLURM_NTASKS=2, SLURM_NODELIST="gpu[01-02]", MASTER_ADDR="head")
    layout = slurm_layout(2, None)
    assert layout is not None and layout.init_method == "tcp://head:29500"


def test_one_process_per_node_is_one_task_per_process(slurm_env):
    slurm_env(SLURM_PROCID=1, SLURM_NODEID=1, SLURM_NNODES=2, SLURM_NTASKS=2, SLURM_NODELIST="a,b")
    layout = slurm_layout(1, None)
    assert layout is not None and layout.task_per_process and (layout.rank, layout.world_size) == (1, 2)


def test_not_a_multi_task_slurm_step(slurm_env):
    assert slurm_layout(4, None) is None
    slurm_env(SLURM_NNODES=2, SLURM_NTASKS=2)  # an allocation without a task of its own
    assert slurm_layout(4, None) is None
    slurm_env(SLURM_PROCID=0, SLURM_NNODES=1, SLURM_NTASKS=1)
    assert slurm_layout(4, None) is None


@pytest.mark.parametrize(
    ("nodes", "ntasks", "per_node"),
    [(2, 4, None), (2, 4, 2), (1, 3, 3), (2, 8, 1)],
)
def test_other_layouts_are_refused_saying_what_was_found(slurm_env, nodes, ntasks, per_node):
    slurm_env(SLURM_PROCID=0, SLURM_NNODES=nodes, SLURM_NTASKS=ntasks, SLURM_NODELIST="a")
    if per_node is not None:
        slurm_env(SLURM_NTASKS_PER_NODE=per_node)
    with pytest.raises(ConfigError) as err:
        slurm_layout(4, None)
    msg = str(err.value)
    assert f"SLURM_NTASKS={ntasks}" in msg and f"SLURM_NNODES={nodes}" in msg
    assert f"SLURM_NTASKS = {nodes * 4}" in msg and "one task per node" in msg


def test_out_of_range_task_and_missing_host_are_refused(slurm_env):
    slurm_env(SLURM_PROCID=1, SLURM_LOCALID=4, SLURM_NNODES=1, SLURM_NTASKS=4, SLURM_NODELIST="a")
    with pytest.raises(ConfigError, match="SLURM_LOCALID=4"):
        slurm_layout(4, None)
    slurm_env(SLURM_LOCALID=1)
    os.environ.pop("SLURM_NODELIST")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        slurm_layout(4, None)


def test_num_shards_must_match_the_slurm_nodes(slurm_env):
    slurm_env(SLURM_PROCID=0, SLURM_NNODES=2, SLURM_NTASKS=2, SLURM_NODELIST="a,b")
    layout = slurm_layout(4, None)
    assert layout is not None
    cfg = get_cfg()
    cfg.NUM_SHARDS = 3
    with pytest.raises(ConfigError, match="NUM_SHARDS = 3 but SLURM runs the job on 2 node"):
        apply_slurm_layout(cfg, layout)


def test_gpu_index():
    assert gpu_index(2, 4) == 2
    assert gpu_index(3, 1) == 0  # one GPU bound to the task
    with pytest.raises(RuntimeError, match="local rank 3"):
        gpu_index(3, 2)


def test_cpu_threads_count_the_real_local_processes():
    cfg = get_cfg()
    cfg.NUM_GPUS, cfg.DATA_LOADER.NUM_WORKERS = 0, 0
    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(cfg) == cores
    assert cpu_threads(cfg, 2) == max(1, cores // 2)
    cfg.CPU_THREADS = 3
    assert cpu_threads(cfg, 2) == 3


@pytest.mark.parametrize(
    "cores, gpus, cpu_processes, workers, threads",
    [
        (2, 0, 1, 1, 1),  # this machine: one worker decodes while the main process computes
        (1, 0, 1, 0, 1),
        (4, 0, 2, 1, 1),  # two gloo processes: two cores each
        (16, 1, 1, 8, 8),  # the H200 node of docs/PERFORMANCE.md: 8 workers measured fastest
        (32, 4, 1, 7, 1),
    ],
)
def test_auto_loader_workers_leave_each_process_one_core(
    monkeypatch, cores, gpus, cpu_processes, workers, threads
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    cfg = get_cfg()
    cfg.NUM_GPUS, cfg.NUM_CPU_PROCESSES = gpus, cpu_processes
    assert cfg.DATA_LOADER.NUM_WORKERS == -1  # the default is auto
    assert loader_workers(cfg) == workers
    assert cpu_threads(cfg) == threads
    cfg.DATA_LOADER.NUM_WORKERS = 3  # an explicit count is kept, whatever the machine
    assert loader_workers(cfg) == 3
    assert cpu_threads(cfg) == max(1, cores // max(gpus, cpu_processes) - 3)


def _layout_cfg(num_shards: int = 1, train_batch: int = 64, test_batch: int = 8):
    cfg = get_cfg()
    cfg.NUM_GPUS, cfg.NUM_SHARDS = 4, num_shards
    cfg.TRAIN.BATCH_SIZE, cfg.TEST.BATCH_SIZE = train_batch, test_batch
    cfg.SOLVER.BASE_LR, cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS = 1e-4, True
    return cfg


def test_world_layout_sets_the_real_machine_count_for_lr_scaling():
    cfg = _layout_cfg()  # torchrun over 2 machines x 4 processes: NUM_SHARDS left at 1
    assert scaled_learning_rates(cfg)[0] == pytest.approx(1e-4)
    apply_world_layout(cfg, world_size=8, local_world_size=4, rank=5)
    assert (cfg.NUM_SHARDS, cfg.SHARD_ID) == (2, 1)
    base, start, end = scaled_learning_rates(cfg)
    assert base == pytest.approx(2e-4) and start == pytest.approx(2 * cfg.SOLVER.WARMUP_START_LR)
    assert end == pytest.approx(2 * cfg.SOLVER.COSINE_END_LR)


def test_world_layout_keeps_a_normal_launch_as_it_was():
    cfg = _layout_cfg(num_shards=2)
    cfg.SHARD_ID = 1
    apply_world_layout(cfg, world_size=8, local_world_size=4, rank=6)
    assert (cfg.NUM_SHARDS, cfg.SHARD_ID) == (2, 1)
    assert scaled_learning_rates(cfg)[0] == pytest.approx(2e-4)
    cfg = _layout_cfg()
    apply_world_layout(cfg, world_size=4, local_world_size=4, rank=3)
    assert (cfg.NUM_SHARDS, cfg.SHARD_ID) == (1, 0)
    assert scaled_learning_rates(cfg)[0] == pytest.approx(1e-4)


def test_world_layout_checks_batches_against_the_real_world():
    # 4 passes the per-machine check of NUM_GPUS 4, but 8 processes cannot share 4 videos
    with pytest.raises(
        ConfigError, match=r"TRAIN.BATCH_SIZE = 4 must be a positive multiple of the world size \(8"
    ):
        apply_world_layout(_layout_cfg(train_batch=4), 8, 4, 0)
    # torchrun with 3 processes per machine while NUM_GPUS says 4
    with pytest.raises(
        ConfigError,
        match=r"TEST.BATCH_SIZE = 8 must be a positive multiple of the processes per machine \(3\)",
    ):
        apply_world_layout(_layout_cfg(train_batch=6), 6, 3, 0)
    with pytest.raises(ConfigError, match="whole number of machines"):
        apply_world_layout(_layout_cfg(), 6, 4, 0)
    with pytest.raises(ConfigError, match="NUM_SHARDS = 3 but the process group has 2 machine"):
        apply_world_layout(_layout_cfg(num_shards=3), 8, 4, 0)


_REPORT_JOB = """
import json, sys
import torch.distributed as dist
from nightcrawler.config import get_cfg
from nightcrawler.config.checks import scaled_learning_rates
from nightcrawler.engine.launch import launch_job

cfg = get_cfg()
cfg.NUM_GPUS, cfg.OUTPUT_DIR, cfg.DATA_LOADER.NUM_WORKERS = 0, sys.argv[1], 0
cfg.TRAIN.BATCH_SIZE, cfg.TEST.BATCH_SIZE = 4, 2
cfg.SOLVER.BASE_LR, cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS = 1e-4, True

def report(cfg):
    out = {"world": dist.get_world_size(), "rank": dist.get_rank(), "num_shards": cfg.NUM_SHARDS,
           "shard_id": cfg.SHARD_ID, "base_lr": scaled_learning_rates(cfg)[0]}
    with open(f"{cfg.OUTPUT_DIR}/report_{out['rank']}.json", "w") as f:
        json.dump(out, f)

launch_job(cfg, None, report)
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not (k.startswith("SLURM_") or k in LAUNCH_ENV)}


def test_torchrun_over_two_machines_scales_the_lr_by_two(tmp_path):
    """Two processes with torchrun's variables, one per 'machine' (LOCAL_WORLD_SIZE 1), NUM_SHARDS left at 1."""
    port = find_free_port()
    procs = []
    for rank in (0, 1):
        env = _clean_env() | {
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        cmd = [sys.executable, "-c", _REPORT_JOB, str(tmp_path)]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"report_{rank}.json").read_text())
        assert seen["world"] == 2 and seen["num_shards"] == 2 and seen["shard_id"] == rank
        assert seen["base_lr"] == pytest.approx(2e-4)
