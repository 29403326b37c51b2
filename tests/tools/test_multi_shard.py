"""Two "machines" (NUM_SHARDS 2) on one host: tools/run_net.py --self-test started once per shard, meeting at a
tcp:// rendezvous on the CPU (gloo). Global rank = SHARD_ID * processes per machine + local rank."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from nightcrawler.utils.distributed import find_free_port
from tests.conftest import REPO_ROOT

TIMEOUT_S = 300


@pytest.mark.parametrize(
    ("per_machine", "shard_args"),
    [(1, "config keys"), (2, "command-line flags")],
    ids=["1-process-per-shard-keys", "2-processes-per-shard-flags"],
)
def test_two_shards_form_one_process_group(tmp_path, per_machine, shard_args):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"NUM_GPUS: 0\nNUM_CPU_PROCESSES: {per_machine}\nCPU_THREADS: 1\n"
        "TRAIN:\n  BATCH_SIZE: 4\nTEST:\n  BATCH_SIZE: 4\n"
    )
    init_method = f"tcp://127.0.0.1:{find_free_port()}"
    procs = []
    try:
        for shard in (0, 1):
            out = tmp_path / f"machine{shard}"  # each machine its own output folder: it shows who ran where
            if shard_args == "config keys":
                shard_opts = ["NUM_SHARDS", "2", "SHARD_ID", str(shard)]
            else:
                shard_opts = ["--num_shards", "2", "--shard_id", str(shard)]
            command = [sys.executable, str(REPO_ROOT / "tools" / "run_net.py"), "--cfg", str(cfg)]
            command += ["--init_method", init_method, "--self-test", *shard_opts, "OUTPUT_DIR", str(out)]
            procs.append(
                subprocess.Popen(
                    command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
        results = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]

    world = 2 * per_machine
    total = world * (world + 1) / 2  # all-reduce of rank + 1 over every rank
    for shard in (0, 1):
        out = tmp_path / f"machine{shard}"
        ranks = [shard * per_machine + local for local in range(per_machine)]
        assert sorted(p.name for p in out.glob("selftest_rank*.json")) == [
            f"selftest_rank{r}.json" for r in ranks
        ]
        for r in ranks:
            seen = json.loads((out / f"selftest_rank{r}.json").read_text())
            assert seen == {"rank": r, "world_size": world, "all_reduce": total, "expected": total}
    log = (tmp_path / "machine0" / "stdout.log").read_text()
    assert re.search(rf"world size {world}\b.*backend gloo", log), log
