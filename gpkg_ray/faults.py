"""A test hook: SIGKILL for a tune at a named point (benchmarks/fault_injection.py).

With `GPKG_RAY_FAULT=NAME` (or `NAME:N`, the Nth time a process reaches it)
in the environment of `guild run tune`, the first process of the tune that
reaches `point(NAME)` (the tune's driver, or a trial's Ray worker: they inherit
the variable) kills the tune's whole process group with SIGKILL, then itself
(a Ray worker has a process group of its own). The tune must run in a session
of its own (`setsid`, or Popen's `start_new_session`): its process group is
then the session's, whose id is the session leader's pid, the `guild run`
process.

Unset, `point` is one comparison with None: the variable is read once, at
import. Not for users: it kills processes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

FAULT_VAR = "GPKG_RAY_FAULT"

_ARMED = os.environ.get(FAULT_VAR) or None
_name, _, _nth = (_ARMED or "").partition(":")
_WANTED = int(_nth) if _nth.isdigit() else 1
_reached = 0


def point(name: str, before_kill: Callable[[], object] | None = None) -> None:
    """Kills the tune here if GPKG_RAY_FAULT names this point (see the module);
    `before_kill` runs first (e.g. a flush, so that a write is cut on disk)."""
    global _reached
    if _ARMED is None or name != _name:
        return
    _reached += 1
    if _reached != _WANTED:
        return
    if before_kill is not None:
        before_kill()
    os.killpg(os.getsid(0), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)  # outside that group
