"""Thin helpers over torch.distributed that also work when it is not initialised (one process)."""

from __future__ import annotations

import os
import socket
from typing import Any

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_master() -> bool:
    """True on global rank 0: the only process that writes files."""
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def find_free_port() -> int:
    """A TCP port free on this machine right now (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_reduce_sum(values: list[float] | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Sum over processes of a numeric vector (returned on the CPU, float64)."""
    t = torch.as_tensor(values, dtype=torch.float64).clone()
    if is_dist():
        dev = device or (
            torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        )
        t = t.to(dev) if dev is not None else t
        dist.all_reduce(t)
        t = t.cpu()
    return t


def all_reduce_mean(values: list[float] | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Mean over processes of a numeric vector (returned on the CPU, float64)."""
    return all_reduce_sum(values, device) / get_world_size()


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every process."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
