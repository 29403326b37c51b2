"""A warm launcher for the method's steps: started once with torch and the package imported, it forks one child
per step, which runs the step's script as ``python script args`` would (``__main__``, ``sys.argv``, working
folder, environment, output, exit handlers, exit code). It saves each step the interpreter's and torch's start-up
while keeping every step in its own process.

Protocol (file descriptors given on the command line): one JSON request per line on the request pipe
(``script``, ``args``, ``cwd``, ``env``, ``log``: a file the child's output is appended to, or null to keep the
launcher's), one JSON reply per request on the reply pipe (``exit``: the child's exit code, 128 + N for signal N).
The launcher ends when the request pipe closes.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import sys
import traceback

PRELOAD = (
    "torch",
    "torchvision",
    "nightcrawler.config",
    "nightcrawler.models.build",
    "nightcrawler.engine.train",
)


def _exit_code(exc: SystemExit) -> int:
    """The exit status ``sys.exit(code)`` gives an interpreter."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _child(request: dict, protocol_fds: tuple[int, int]) -> int:
    """In the forked child: become ``python script args`` and run it; returns its exit code."""
    for fd in protocol_fds:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("log"):
        fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    script = request["script"]
    sys.argv = [script, *request["args"]]
    sys.path[0] = os.path.dirname(script)
    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        return 1


def serve(request_fd: int, reply_fd: int) -> None:
    """Forks a child per request until the request pipe closes."""
    with os.fdopen(request_fd, "r") as requests, os.fdopen(reply_fd, "w") as replies:
        for line in requests:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(request, (request_fd, reply_fd))
                finally:
                    try:
                        atexit._run_exitfuncs()
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            replies.write(json.dumps({"exit": status if status >= 0 else 128 - status}) + "\n")
            replies.flush()


def main() -> None:
    request_fd, reply_fd = int(sys.argv[1]), int(sys.argv[2])
    for name in PRELOAD:
        importlib.import_module(name)
    serve(request_fd, reply_fd)


if __name__ == "__main__":
    main()
