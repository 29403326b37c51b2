"""Atomic file writes: a reader never sees a half-written file, and a kill never destroys the previous one."""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from nightcrawler.utils.errors import OutputWriteError

_REASONS = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def _write_error(path: Path, exc: OSError) -> OutputWriteError:
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    return OutputWriteError(path, f"{reason}; the previous file (if any) is unchanged", exc.errno)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any):
    """Opens a temporary file beside ``path``; on success it is flushed, synced and renamed over ``path``.

    An ``OSError`` while creating, writing or renaming (read-only file system, disk full, permission) becomes
    :class:`OutputWriteError` naming ``path`` and the reason; the temporary file is removed and ``path``
    keeps its previous content."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OutputWriteError:
        raise
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            if os.path.exists(tmp):
                os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError):
            raise _write_error(path, exc) from exc
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
