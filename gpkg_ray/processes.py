"""Stopping processes we started, by handle: terminate, wait, then kill."""

from __future__ import annotations

import contextlib

import psutil

GRACE_SECONDS = 5.0


def process_tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and all its descendants (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


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
