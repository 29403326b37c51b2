"""Runs ``tools/run_net.py`` with its arguments, but the checkpoint save number ``NC_FAULT_KILL_AT_SAVE``
(1-based) writes only the fraction ``NC_FAULT_KILL_FRACTION`` of its bytes to the temporary file, syncs them
and SIGKILLs its own process: a kill in the middle of a checkpoint write, at a chosen place."""

from __future__ import annotations

import io
import os
import runpy
import signal
import sys
from pathlib import Path

import torch

from nightcrawler.engine import checkpointer
from nightcrawler.utils.io import atomic_write

RUN_NET = Path(__file__).resolve().parents[2] / "tools" / "run_net.py"


def main() -> None:
    kill_at = int(os.environ["NC_FAULT_KILL_AT_SAVE"])
    fraction = float(os.environ["NC_FAULT_KILL_FRACTION"])
    real_save = checkpointer.atomic_torch_save
    saves = {"n": 0}

    def save_then_die(obj, path):
        saves["n"] += 1
        if saves["n"] != kill_at:
            return real_save(obj, path)
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data = buffer.getvalue()

        def partial_writer(f):
            f.write(data[: int(len(data) * fraction)])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        return atomic_write(path, partial_writer)

    checkpointer.atomic_torch_save = save_then_die
    sys.argv = [str(RUN_NET), *sys.argv[1:]]
    runpy.run_path(str(RUN_NET), run_name="__main__")


if __name__ == "__main__":
    main()
