"""User errors and exit codes: the one convention every entry point follows.

A *user error* is something the person running a command can fix (a config key, a video, a CSV, a checkpoint, an
output folder); it ends the command with one paragraph on stderr and the exit code below, no traceback unless
``--debug`` or ``NIGHTCRAWLER_DEBUG=1`` asks for it. Anything else is a bug: exit code 1 and the full traceback.

=====  =========================================================================================
code   meaning
=====  =========================================================================================
0      success
1      internal error (a bug: the traceback is always shown)
2      configuration or command-line error (unknown key, wrong type, impossible combination)
3      data error (missing / undecodable video, missing input file, malformed CSV, PKLs that disagree)
4      checkpoint error (unreadable, truncated, for another model)
5      output cannot be written (read-only folder, disk full, permission)
6      training diverged (NaN / inf loss); the last good checkpoint is kept
130    interrupted (Ctrl-C)
=====  =========================================================================================

The error classes themselves live beside the code that raises them (``ConfigError`` in ``config``,
``VideoDecodeError`` in ``data.decoders`` ...); :func:`exit_code_for` maps them to the codes.
"""

from __future__ import annotations

import errno
import os

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_CHECKPOINT = 4
EXIT_OUTPUT = 5
EXIT_DIVERGED = 6
EXIT_INTERRUPTED = 130

DEBUG_ENV = "NIGHTCRAWLER_DEBUG"


class OutputWriteError(OSError):
    """An output file cannot be written (read-only folder, disk full, no permission); nothing was replaced."""

    def __init__(self, path: str | os.PathLike, reason: str, err: int | None = None):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(err if err is not None else errno.EIO, f"cannot write '{self.path}': {reason}")

    def __str__(self) -> str:
        return f"cannot write '{self.path}': {self.reason}"

    def __reduce__(self):  # picklable across spawned processes
        return (type(self), (self.path, self.reason, self.errno))


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the last complete checkpoint is left untouched."""


def _user_error_classes() -> list[tuple[tuple[type[BaseException], ...], int]]:
    # imported here: this module sits below every package that defines an error class
    from nightcrawler.config.loading import ConfigError
    from nightcrawler.data.csvs import CsvFormatError
    from nightcrawler.data.decoders import BackendUnavailableError, VideoDecodeError
    from nightcrawler.models.checkpoint import CheckpointError
    from nightcrawler.pseudo.io import PseudoLabelError

    return [
        ((ConfigError, BackendUnavailableError), EXIT_CONFIG),
        # a FileNotFoundError reaching an entry point is an input the user named (a video, CSV, PKL) missing
        ((VideoDecodeError, CsvFormatError, PseudoLabelError, FileNotFoundError), EXIT_DATA),
        ((CheckpointError,), EXIT_CHECKPOINT),
        ((OutputWriteError,), EXIT_OUTPUT),
        ((TrainingDivergedError,), EXIT_DIVERGED),
    ]


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of a user error, or None when ``exc`` is not one (a bug)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    for classes, code in _user_error_classes():
        if isinstance(exc, classes):
            return code
    return None


def debug_requested() -> bool:
    """Whether ``NIGHTCRAWLER_DEBUG`` asks for tracebacks of user errors."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
