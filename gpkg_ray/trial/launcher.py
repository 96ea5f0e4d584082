"""Starting a step's `guild run` process: fresh, or forked from a warm Python.

A fresh `guild run` spends about half a second of CPU on Python's start and
Guild's imports before it reads guild.yml, for every step of every trial. A
trial's steps run one after another in one Ray actor, which keeps a
`ForkLauncher`: a process (launcher_main) that imports Guild once, then forks a
child per step that runs Guild's own command line (`guild.main`) with the
step's arguments. The child is the same `guild run` as a fresh one, less its
start-up: same run directory, same op process, same exit status.

Both launchers give a Popen-like handle (`pid`, `poll`, `wait`) and a psutil
handle on the `guild run` process, taken while its pid was surely its own.
The fork launcher is a child subreaper: what a step daemonizes (setsid,
double fork) stays below it, where `leftovers` finds it, and is stopped when
the step ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
from typing import IO, Protocol

import psutil

from gpkg_ray.processes import GRACE_SECONDS, find_process, process_tree, wait_ended

START_TIMEOUT_SECONDS = 120.0
"""Longest a start waits for the launcher (its first start waits for its imports)."""
CLOSE_WAIT_SECONDS = 2 * GRACE_SECONDS + 5
"""How long a closed launcher may take to stop a step that still runs."""
LOST_EXIT_STATUS = 1
"""Exit status of a step whose launcher ended before the step did."""


class StepProcess(Protocol):
    pid: int
    process: psutil.Process | None
    """The `guild run` process, by a handle that names no other process once
    it has ended (None if it ended before one was taken)."""

    def poll(self) -> int | None: ...

    def leftovers(self) -> list[psutil.Process]:
        """Processes of the step no longer below its `guild run`: ones it
        daemonized (setsid, double fork), where they can be found."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Exit status; raises subprocess.TimeoutExpired after `timeout`."""
        ...


class StepLauncher(Protocol):
    gone: bool
    """Whether it can start no more steps (make a new one)."""

    def start(self, guild_args: list[str], stderr: IO[bytes]) -> StepProcess:
        """Starts `guild GUILD_ARGS` with its stderr to `stderr` (an open
        file, which needs no name)."""
        ...

    def close(self) -> None: ...


class LauncherGone(Exception):
    """The fork launcher ended: start steps with a new one."""


class SubprocessLauncher:
    """A fresh Python per step: `python -m guild.main_bootstrap ARGS`."""

    def __init__(self, cwd: str, env: dict[str, str]):
        self.cwd = cwd
        self.env = env
        self.gone = False

    def start(self, guild_args: list[str], stderr: IO[bytes]) -> StepProcess:
        # Same session as the Ray worker (no start_new_session): when Ray ends
        # the worker's process group, the step goes with it.
        return _FreshStep(
            [sys.executable, "-m", "guild.main_bootstrap", *guild_args],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

    def close(self) -> None:
        pass


class _FreshStep(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.process = own_child(self.pid)

    def leftovers(self) -> list[psutil.Process]:
        return []  # reparented to whatever reaps orphans: not found from here


class ForkLauncher:
    """Steps forked from one warm process (gpkg_ray.trial.launcher_main).

    Requests are JSON lines on a Unix socket (the launcher's stdin), each with
    the step's stderr as an open file (SCM_RIGHTS): a file that never has a
    name leaves none behind, whenever either process is killed. Replies are
    JSON lines on the launcher's stdout: a start gets `{"started": PID,
    "created": START_TIME}` back at once, and `{"ended": PID, "exit": STATUS}`
    comes when the launcher has reaped that child and stopped what it
    daemonized (its pid may name another process from then on). A thread here
    reads the replies. The launcher ends when its socket closes (close(), or
    this process ending), and stops steps still running then.
    """

    def __init__(self, cwd: str, env: dict[str, str]):
        self._channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Same session and process group as the Ray worker, as for a fresh step.
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "gpkg_ray.trial.launcher_main"],
                cwd=cwd,
                env=env,
                stdin=theirs.fileno(),
                stdout=subprocess.PIPE,
            )
        self.process = own_child(self._proc.pid)
        """The launcher, by handle: the parent of what steps daemonized."""
        self._lock = threading.Lock()  # one start at a time: replies in order
        self._started: queue.Queue[tuple[int, float] | None] = queue.Queue()
        self._ended = threading.Condition()
        self._exits: dict[int, int] = {}
        self.gone = False
        threading.Thread(
            target=self._read_replies, name="gpkg-ray-launcher", daemon=True
        ).start()

    def start(self, guild_args: list[str], stderr: IO[bytes]) -> StepProcess:
        request = json.dumps({"args": guild_args}).encode() + b"\n"
        with self._lock:
            try:
                sent = socket.send_fds(self._channel, [request], [stderr.fileno()])
                if sent != len(request):
                    raise OSError(f"{sent} of {len(request)} bytes sent")
                started = self._started.get(timeout=START_TIMEOUT_SECONDS)
            except (OSError, queue.Empty) as e:
                raise LauncherGone(f"the step launcher does not answer: {e}") from e
        if started is None:
            raise LauncherGone("the step launcher ended")
        pid, created = started
        return _ForkedStep(self, pid, find_process(pid, created))

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a launcher that was killed
            self._channel.close()
        try:
            # A step still running is stopped first: SIGTERM, then SIGKILL.
            self._proc.wait(timeout=CLOSE_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def exit_status(
        self, pid: int, process: psutil.Process | None, timeout: float | None
    ) -> int | None:
        """The exit status of forked child `pid` (`process`), or None after
        `timeout`."""
        with self._ended:
            self._ended.wait_for(lambda: pid in self._exits or self.gone, timeout)
            if pid in self._exits:
                return self._exits[pid]
            if not self.gone:
                return None
        # The launcher ended first (killed): no status to be had, only an end,
        # watched by handle (the child's new parent reaps it, and its pid is
        # free for any process from then on).
        if process is not None and not wait_ended(process, timeout):
            return None
        return LOST_EXIT_STATUS

    def _read_replies(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            reply = json.loads(line)
            if "started" in reply:
                self._started.put((reply["started"], reply["created"]))
            else:
                with self._ended:
                    self._exits[reply["ended"]] = reply["exit"]
                    self._ended.notify_all()
        with self._ended:
            self.gone = True
            self._ended.notify_all()
        self._started.put(None)


class _ForkedStep:
    def __init__(
        self, launcher: ForkLauncher, pid: int, process: psutil.Process | None
    ):
        self.launcher = launcher
        self.pid = pid
        self.process = process
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        status = self._status(timeout)
        if status is None:
            raise subprocess.TimeoutExpired(f"guild run (pid {self.pid})", timeout or 0)
        return status

    def leftovers(self) -> list[psutil.Process]:
        launcher = self.launcher.process
        if launcher is None:
            return []
        try:
            children = launcher.children()
        except psutil.NoSuchProcess:
            return []
        # One step runs at a time: any other child is an orphan of this one.
        return [
            p
            for child in children
            if child.pid != self.pid
            for p in process_tree(child)
        ]

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            self.returncode = self.launcher.exit_status(self.pid, self.process, timeout)
        return self.returncode


def own_child(pid: int) -> psutil.Process | None:
    """A handle on child `pid` of this process, not reaped yet: its pid is
    its own. (find_process with no start time to check would find none.)"""
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def step_launcher(cwd: str, env: dict[str, str]) -> StepLauncher:
    """A fork launcher where the OS lets it watch its children by pidfd
    (Linux 5.3 and later), else fresh processes."""
    if _pidfd_works():
        return ForkLauncher(cwd, env)
    return SubprocessLauncher(cwd, env)


def _pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True
