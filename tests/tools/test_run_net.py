from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT


def _run(args, **kw):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "run_net.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        **kw,
    )


def test_unknown_override_exits_nonzero_naming_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path}\n")
    res = _run(["--cfg", str(cfg), "NO.SUCH_KEY", "1"])
    assert res.returncode != 0
    assert "NO.SUCH_KEY" in res.stderr


def test_two_process_gloo_all_reduce(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"NUM_GPUS: 0\nNUM_CPU_PROCESSES: 2\nOUTPUT_DIR: {tmp_path}\nTRAIN:\n  BATCH_SIZE: 2\nTEST:\n  BATCH_SIZE: 2\n"
    )
    res = _run(["--cfg", str(cfg), "--self-test"])
    assert res.returncode == 0, res.stderr
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"selftest_rank{rank}.json").read_text())
        assert seen == {"rank": rank, "world_size": 2, "all_reduce": 3.0, "expected": 3.0}
    log = (tmp_path / "stdout.log").read_text()
    assert "environment:" in log and "seed 1" in log and "decoding backend" in log


def test_torchrun_environment_is_honoured(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"NUM_GPUS: 0\nOUTPUT_DIR: {tmp_path}\n")
    port = __import__("nightcrawler.utils.distributed", fromlist=["x"]).find_free_port()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            f"--master_port={port}",
            str(REPO_ROOT / "tools" / "run_net.py"),
            "--cfg",
            str(cfg),
            "--self-test",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "selftest_rank1.json").read_text())["world_size"] == 2


def test_slurm_one_task_per_node_spawns_each_nodes_processes(tmp_path):
    """Two SLURM 'nodes' (one task each, on this machine) with NUM_CPU_PROCESSES 2: a world of 4."""
    import os

    from nightcrawler.utils.distributed import find_free_port

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"NUM_GPUS: 0\nNUM_CPU_PROCESSES: 2\nOUTPUT_DIR: {tmp_path}\nTRAIN:\n  BATCH_SIZE: 4\nTEST:\n  BATCH_SIZE: 2\n"
    )
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "WORLD_SIZE", "RANK"))
    }
    base.pop("LOCAL_RANK", None)
    base |= {"SLURM_NNODES": "2", "SLURM_NTASKS": "2", "SLURM_NODELIST": "localhost,localhost"}
    base |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(find_free_port())}
    procs = []
    for node in (0, 1):
        env = base | {"SLURM_PROCID": str(node), "SLURM_NODEID": str(node), "SLURM_LOCALID": "0"}
        cmd = [sys.executable, str(REPO_ROOT / "tools" / "run_net.py"), "--cfg", str(cfg), "--self-test"]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    for rank in range(4):
        seen = json.loads((tmp_path / f"selftest_rank{rank}.json").read_text())
        assert seen == {"rank": rank, "world_size": 4, "all_reduce": 10.0, "expected": 10.0}
    assert "world size 4 on 2 machine(s)" in (tmp_path / "stdout.log").read_text()


def test_slurm_layout_that_does_not_fit_exits_with_a_clear_error(tmp_path):
    import os

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"NUM_GPUS: 0\nNUM_CPU_PROCESSES: 2\nOUTPUT_DIR: {tmp_path}\nTEST:\n  BATCH_SIZE: 2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"SLURM_PROCID": "0", "SLURM_NNODES": "2", "SLURM_NTASKS": "3", "SLURM_NODELIST": "a,b"}
    res = _run(["--cfg", str(cfg), "--self-test"], env=env)
    assert res.returncode == 2
    assert "SLURM_NTASKS=3, SLURM_NNODES=2" in res.stderr and "one task per node" in res.stderr
