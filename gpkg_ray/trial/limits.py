"""Per-trial limits (from Hypermax): wall time of a trial, memory of a step.

A trial over a limit is stopped. With a `penalty`, it ends with the penalty as
its objective, so a model-based searcher learns to avoid that region; without
one, it fails.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import psutil

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_time: float = 0.0
    """Wall seconds from the start of a trial's first step; 0 = no limit."""
    max_memory: float = 0.0
    """MB of RSS of a step's processes (its op, their children, and what it
    daemonized where the fork launcher finds it); 0 = none."""
    penalty: float | None = None
    """Objective of a trial stopped at a limit; None = the trial fails."""

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(settings.max_time, settings.max_memory, settings.limit_penalty)

    def exceeded(self, started: float, procs: list[psutil.Process]) -> str | None:
        """Why a trial started at `started` (time.monotonic) with a step whose
        op runs as `procs` (StepRun.op_processes) is over a limit now, or None."""
        if self.max_time and time.monotonic() - started > self.max_time:
            return f"max-time={self.max_time:g} s reached"
        if self.max_memory and procs:
            rss = total_rss(procs) / MB
            if rss > self.max_memory:
                return f"max-memory={self.max_memory:g} MB exceeded ({rss:.0f} MB)"
        return None


def total_rss(procs: list[psutil.Process]) -> int:
    """Resident memory of `procs`, in bytes."""
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total
