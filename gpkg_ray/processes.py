"""Processes we started, by handle: found again, stopped (terminate, wait, then
kill), paused and continued.

A pid alone names whatever process has it now: once a process has ended (and
been reaped), the kernel gives its pid to the next one. So a process is held
as a `psutil.Process`, taken while it was known to be ours (psutil checks its
start time before it signals it or lists its children), and recorded for
another process or a later attempt as [pid, start time] (`handles`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

import psutil

GRACE_SECONDS = 5.0

SAME_START_SECONDS = 0.001
"""How far a process's start time may be from the recorded one and still be
the same process: float rounding only, since a process that reuses a pid can
start within a second of the one before (a busy machine, or a test). psutil
gives start times on the wall clock; one stepped since (not slewed, as NTP
does) makes a recorded process look like another, which is then left
running: the safe side."""

Handle = list[float]
"""[pid, start time] of a process, as JSON keeps it."""


def handles(procs: Iterable[psutil.Process]) -> list[Handle]:
    """[pid, start time] of each of `procs` still alive: what finds exactly
    these processes again (`find_processes`), not others that reuse a pid."""
    found = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found.append([proc.pid, proc.create_time()])
    return found


def find_process(
    pid: int, started: float | None = None, before: float | None = None
) -> psutil.Process | None:
    """Process `pid`, if it is the one that started at `started` (a time
    psutil gave), or, with no start time recorded, one that started no later
    than `before` (when the record was written); None if it has ended, is a
    zombie, or its pid now names another process."""
    try:
        proc = psutil.Process(int(pid))
        created = proc.create_time()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None
    if started is not None:
        same = abs(created - float(started)) <= SAME_START_SECONDS
    else:
        same = before is not None and created <= before + SAME_START_SECONDS
    return proc if same else None


def find_processes(
    recorded: Iterable[Handle | int], before: float | None = None
) -> list[psutil.Process]:
    """The recorded processes that still run: each entry is a `handles` entry,
    or a bare pid (a record without start times: see find_process)."""
    found = []
    for entry in recorded:
        pid, started = (entry, None) if isinstance(entry, int) else entry
        proc = find_process(pid, started, before)
        if proc is not None:
            found.append(proc)
    return found


def process_tree(proc: int | psutil.Process) -> list[psutil.Process]:
    """The process and all its descendants (empty if it is gone). Give a
    handle where the pid may have been reaped: psutil lists the children of
    a handle only while its pid still names that process."""
    try:
        root = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def has_ended(proc: psutil.Process) -> bool:
    """Whether `proc` has ended (a zombie has): psutil compares its start
    time, so a pid taken by another process since does not count as it."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_ended(proc: psutil.Process, timeout: float | None) -> bool:
    """Waits up to `timeout` seconds (None: no limit) for `proc` to end;
    returns whether it did. For a process that is not our child, which
    `proc.wait()` would follow by pid alone."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not has_ended(proc):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def resume_processes(procs: list[psutil.Process]) -> None:
    """SIGCONT to each of `procs` (paused ones go on; others ignore it)."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.resume()


def stop_processes(
    procs: list[psutil.Process], grace: float = GRACE_SECONDS, wait_first: bool = False
) -> None:
    """Ends every process in `procs`: SIGTERM, then SIGKILL what is left after
    `grace` seconds. With `wait_first`, gives them `grace` seconds to exit on
    their own before that (for processes already told to stop)."""
    alive = procs
    if wait_first:
        _, alive = psutil.wait_procs(alive, timeout=grace)
    for signal in ("terminate", "kill"):
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                getattr(proc, signal)()
                proc.resume()  # a paused process acts on SIGTERM once continued
        _, alive = psutil.wait_procs(alive, timeout=grace)
