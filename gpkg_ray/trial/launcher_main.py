"""The step launcher: imports Guild once, then forks a `guild run` per request.

Started by gpkg_ray.trial.launcher.ForkLauncher in a trial's Ray actor, with
the steps' working directory and environment, its stdin one end of a Unix
socket. Reads JSON lines there, `{"args": [...]}`, each sent with one open
file (SCM_RIGHTS): the step's stderr. Forks a child that runs Guild's command
line with those arguments, stdin and stdout on /dev/null and stderr to that
file, and answers `{"started": PID, "created": START_TIME}` on stdout (the
start time, read before the child can be reaped, tells the client's handle
from a process that reuses the pid later); `{"ended": PID, "exit": STATUS}`
follows once the child has ended and what it left running is stopped.

A child subreaper (PR_SET_CHILD_SUBREAPER): a process a step daemonizes
(setsid, double fork) becomes the launcher's child, not init's, so the client
sees it (memory limits), and it is stopped when its step ends or the launcher
does. Children are reaped on SIGCHLD. One thread, so that a fork never copies
a lock another thread holds: the BLAS pool NumPy starts on import is kept to
the main thread, and a launcher that has a second thread all the same starts
the step as a fresh process instead of forking. On end of input, steps still
running are stopped, and it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from collections import deque

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
ONE_THREAD_ENV = {
    # NumPy (imported by TensorBoard's writer) starts OpenBLAS's thread pool
    # on import, a thread per core: these keep BLAS in the calling thread.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_PASSES = 3
"""Rounds of stopping what a step left: a process stopped may fork as it goes."""


class Launcher:
    def __init__(self, channel: socket.socket):
        self.channel = channel
        self.children: set[int] = set()  # pids of the steps running
        self.files: deque[int] = deque()  # stderr fds received, one per request
        self.selector = selectors.DefaultSelector()
        self.selector.register(channel, selectors.EVENT_READ)
        # SIGCHLD wakes the select: a step, or an orphan of one, has ended.
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    def serve(self, env: dict[str, str]) -> int:
        pending = b""
        while True:
            for key, _ in self.selector.select():
                if key.fileobj != self.channel:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
                    self.reap()
                    continue
                chunk, fds, _, _ = socket.recv_fds(self.channel, 65536, 16)
                self.files.extend(fds)
                if not chunk:
                    self.stop_all()
                    return 0
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.start(json.loads(line), self.files.popleft(), env)

    def start(self, request: dict, stderr: int, env: dict[str, str]) -> None:
        if _thread_count() == 1:
            pid = os.fork()
            if pid == 0:
                self._in_child()
                os._exit(_run_guild(request["args"], stderr, env))
        else:  # a fork would copy the other thread's locks as they are now
            pid = _spawn_guild(request["args"], stderr, env)
        os.close(stderr)
        self.children.add(pid)
        # Not reaped before reap(): the pid is still the child's.
        _reply({"started": pid, "created": psutil.Process(pid).create_time()})

    def _in_child(self) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self.wake_r, self.wake_w, *self.files):
            os.close(fd)
        self.channel.close()

    def reap(self) -> None:
        """Reaps every child that has ended: a step (answered once what it
        left is stopped) or an orphan that was reparented here."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                self.children.discard(pid)
                self.stop_leftovers()
                _reply({"ended": pid, "exit": os.waitstatus_to_exitcode(status)})

    def stop_leftovers(self) -> None:
        """Stops every descendant that is not a running step: what a step that
        ended (or was stopped) daemonized (one step runs at a time)."""
        for _ in range(LEFTOVER_PASSES):
            procs = [
                proc
                for child in _descendants(recursive=False)
                if child.pid not in self.children
                for proc in process_tree(child)
            ]
            if not procs:
                return
            stop_processes(procs[::-1])

    def stop_all(self) -> None:
        """Steps still running when the actor went: deepest processes first."""
        for _ in range(LEFTOVER_PASSES):
            procs = _descendants()
            if not procs:
                break
            stop_processes(procs[::-1])
        self.reap()


def main() -> int:
    _become_subreaper()
    env = dict(os.environ)  # the steps' environment, as the launcher got it
    os.environ.update(ONE_THREAD_ENV)
    _preload()
    return Launcher(socket.socket(fileno=sys.stdin.fileno())).serve(env)


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _preload() -> None:
    for name in PRELOAD:
        # An import error is left to the step: its `guild run` says what is wrong.
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _descendants(recursive: bool = True) -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=recursive)
    except psutil.NoSuchProcess:
        return []


def _run_guild(args: list[str], stderr: int, env: dict[str, str]) -> int:
    """In the forked child: `guild ARGS`, as `guild` itself would run it."""
    try:
        _redirect(stderr)
        os.environ.clear()
        os.environ.update(env)  # the op's BLAS uses every core again
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


def _spawn_guild(args: list[str], stderr: int, env: dict[str, str]) -> int:
    """A fresh `guild ARGS` (no fork of this process): its pid."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        return os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "guild.main_bootstrap", *args],
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, null, 1),
                (os.POSIX_SPAWN_DUP2, stderr, 2),
            ],
        )
    finally:
        os.close(null)


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


if __name__ == "__main__":
    sys.exit(main())
