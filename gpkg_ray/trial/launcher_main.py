"""The step launcher: imports Guild once, then forks a `guild run` per request.

Started by gpkg_ray.trial.launcher.ForkLauncher in a trial's Ray actor, with
the steps' working directory and environment. Reads JSON lines on stdin,
`{"args": [...], "stderr": PATH}`, opens PATH, forks a child that runs
Guild's command line with those arguments, stdin and stdout on /dev/null and
stderr appended to PATH, and answers `{"started": PID, "created": START_TIME}`
on stdout (the start time, read before the child can be reaped, tells the
client's handle from a process that reuses the pid later); `{"ended": PID,
"exit": STATUS}` follows once the child has ended (watched by pidfd). One
thread, so that a fork never copies a lock another thread holds. On end of
input, steps still running are stopped, and it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import selectors
import sys
import traceback

import psutil

from gpkg_ray.processes import process_tree, stop_processes

# What a `guild run` imports before it reads guild.yml, heaviest first (from
# `python -X importtime -m guild.main_bootstrap run ...`): about 0.6 s.
PRELOAD = (
    "tensorboard.summary.writer",
    "guild.main",
    "guild.model",
    "guild.commands.main_impl",
    "guild.commands.run_impl",
    "guild.op",
    "guild.op_util",
    "guild.plugins.python_script",
    "absl.logging",
)


def main() -> int:
    _preload()
    children: dict[int, int] = {}  # pidfd -> pid
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd != sys.stdin.fileno():
                _reap(key.fd, children, selector)
                continue
            chunk = os.read(key.fd, 65536)
            if not chunk:
                _stop_children(children)
                return 0
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _start(json.loads(line), children, selector)


def _preload() -> None:
    for name in PRELOAD:
        # An import error is left to the step: its `guild run` says what is wrong.
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _start(request: dict, children: dict[int, int], selector) -> None:
    # Opened before the answer: the client may remove the file's name then.
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND)
    pid = os.fork()
    if pid == 0:
        os._exit(_run_guild(request["args"], stderr))
    os.close(stderr)
    pidfd = os.pidfd_open(pid)
    children[pidfd] = pid
    selector.register(pidfd, selectors.EVENT_READ)
    # Not reaped before _reap: the pid is still the child's.
    _reply({"started": pid, "created": psutil.Process(pid).create_time()})


def _reap(pidfd: int, children: dict[int, int], selector) -> None:
    pid = children.pop(pidfd)
    selector.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    _reply({"ended": pid, "exit": os.waitstatus_to_exitcode(status)})


def _run_guild(args: list[str], stderr: int) -> int:
    """In the forked child: `guild ARGS`, as `guild` itself would run it."""
    try:
        _redirect(stderr)
        sys.argv = ["guild", *args]
        import guild.main

        guild.main.main()
        return 0
    except SystemExit as e:
        return _exit_status(e.code)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        atexit._run_exitfuncs()  # what a `guild` process does as it exits
        sys.stdout.flush()
        sys.stderr.flush()


def _redirect(stderr: int) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr, 2)
    os.close(null)
    os.close(stderr)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _stop_children(children: dict[int, int]) -> None:
    """Steps still running when the actor went: their op processes first."""
    for pid in children.values():
        stop_processes(process_tree(pid)[::-1])
        os.waitpid(pid, 0)


if __name__ == "__main__":
    sys.exit(main())
