"""Seeding torch, numpy and Python's random in every process and DataLoader worker; capturing and restoring their
states to replay draws."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker seeding: derives numpy/random seeds from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


@dataclass(frozen=True)
class RandomStates:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU generator and, optionally, one
    ``random.Random`` instance: captured by :func:`capture_random_states`, put back by :meth:`restore` (to
    replay the same draws on a second input, e.g. a teacher's copy of a clip)."""

    python: Any
    numpy: Any
    torch: torch.Tensor
    rng: Any = None

    def restore(self, rng: random.Random | None = None) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if rng is not None:
            rng.setstate(self.rng)


def capture_random_states(rng: random.Random | None = None) -> RandomStates:
    """The current :class:`RandomStates` (with ``rng``'s state when given)."""
    return RandomStates(
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        rng.getstate() if rng is not None else None,
    )
