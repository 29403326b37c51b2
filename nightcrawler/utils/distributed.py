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


# ---------------------------------------------------------------------------------------------------- devices
AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # TRAIN/TEST.MIXED_PRECISION


def amp_dtype(mode: str, key: str = "MIXED_PRECISION") -> torch.dtype | None:
    """The autocast dtype of a ``none`` / ``fp16`` / ``bf16`` setting (None: FP32); ValueError naming ``key``."""
    if mode not in AMP_DTYPES:
        raise ValueError(f"{key} = {mode!r} is not one of {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[mode]


def job_device(num_gpus: int) -> torch.device:
    """This process's device: the current CUDA device when the job uses GPUs (``NUM_GPUS > 0``), else the CPU.

    Raises RuntimeError when GPUs are asked for but not usable."""
    if num_gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"NUM_GPUS is {num_gpus} but CUDA is not available; set NUM_GPUS 0 for the CPU")
    if num_gpus > torch.cuda.device_count():
        raise RuntimeError(f"NUM_GPUS is {num_gpus} but only {torch.cuda.device_count()} GPUs are visible")
    return torch.device("cuda", torch.cuda.current_device())


def prepare_model(
    model: torch.nn.Module, device: torch.device, *, find_unused_parameters: bool = False
) -> torch.nn.Module:
    """Moves ``model`` to ``device`` and, when torch.distributed runs more than one process, wraps it in
    DistributedDataParallel (which makes every process start from rank 0's weights)."""
    model = model.to(device)
    if is_dist() and get_world_size() > 1:
        cuda = device.type == "cuda"
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if cuda else None,
            output_device=device.index if cuda else None,
            find_unused_parameters=find_unused_parameters,
        )
    return model


def broadcast_parameters(model: torch.nn.Module, src: int = 0) -> None:
    """Makes every process hold rank ``src``'s parameters and buffers (no-op in a single process)."""
    if not (is_dist() and get_world_size() > 1):
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=src)
