"""How every entry point ends: :func:`run_cli` turns user errors into one paragraph and an exit code.

Each script's ``main(argv)`` is ``return run_cli(_main, argv)``; ``_main`` raises the error classes of
:mod:`nightcrawler.utils.errors` instead of printing and returning codes itself. ``--debug`` (anywhere on the
command line, removed before the script's own parser sees it) or ``NIGHTCRAWLER_DEBUG=1`` adds the traceback of
a user error; internal errors (bugs) always show it. argparse's own usage errors keep their exit code 2.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence

from nightcrawler.utils.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, debug_requested, exit_code_for

DEBUG_FLAG = "--debug"
HINT = "(run again with --debug, or NIGHTCRAWLER_DEBUG=1, for the traceback)"


def split_debug(argv: Sequence[str] | None) -> tuple[list[str], bool]:
    """``argv`` (default ``sys.argv[1:]``) without ``--debug``, and whether it was there or asked for by the
    environment. Arguments after a bare ``--`` are left alone."""
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    found = DEBUG_FLAG in args[:end]
    kept = [a for a in args[:end] if a != DEBUG_FLAG] + args[end:]
    return kept, found or debug_requested()


def error_paragraph(exc: BaseException) -> str:
    """``error: <message>`` on one paragraph (the message's own line breaks are kept)."""
    message = str(exc).strip() or type(exc).__name__
    return f"error: {message}"


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Runs ``main(argv)`` under the exit-code convention and returns the code for ``sys.exit``.

    ``main`` returning None counts as success. A user error prints ``error: <message>`` (and a hint line)
    to stderr and returns its code; with debug on, the traceback comes first. Ctrl-C returns 130; any other
    exception prints its traceback and returns 1. ``SystemExit`` (argparse) passes through untouched.
    """
    args, debug = split_debug(argv)
    try:
        code = main(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc(file=sys.stderr)
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            traceback.print_exc(file=sys.stderr)
            print(f"internal error ({type(exc).__name__}): this is a bug, please report it", file=sys.stderr)
            return EXIT_INTERNAL
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(error_paragraph(exc), file=sys.stderr)
        if not debug:
            print(HINT, file=sys.stderr)
        sys.stderr.flush()
        return code
    return EXIT_OK if code is None else int(code)
