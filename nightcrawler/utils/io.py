"""Atomic file writes: a reader never sees a half-written file, and a kill never destroys the previous one."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any):
    """Opens a temporary file beside ``path``; on success it is flushed, synced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, writer: Callable[[IO], None], binary: bool = True) -> Path:
    """Calls ``writer(file)`` on a temporary file and renames it to ``path``."""
    kwargs = {} if binary else {"encoding": "utf-8", "newline": ""}
    with atomic_open(path, "wb" if binary else "w", **kwargs) as f:
        writer(f)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_pickle_dump(obj: Any, path: str | os.PathLike) -> Path:
    """Pickles ``obj`` to ``path`` atomically."""
    return atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
