"""Ctrl-C, SIGTERM and `guild stop` of the tune run: a clean stop of the search.
(The engine stops a search of its own accord too, when its first trials all
fail the same way: engine.fail_fast; the StopRequest then says so.)

The first SIGINT or SIGTERM asks Ray Tune to end the search the way its own
Ctrl-C handling does (Tune listens for SIGUSR1 too): it stops the running
trials, whose trainables stop their Guild runs, and `Tuner.fit` returns so the
results so far are saved. A second signal stops at once (KeyboardInterrupt).

`guild stop` sends SIGTERM to the tune's process, then to its children 5 s
later: the trials' Guild runs must be stopped before then, which is why the
trainables poll in short slices (ray_tune.HEARTBEAT_SECONDS).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpkg_ray.engine.fail_fast import SystematicFailure

HANDLED = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    signal: signal.Signals | None = None
    """The first stop signal received, if any."""
    failure: SystematicFailure | None = None
    """Set by the engine when it stopped the search because its first trials
    all failed the same way (engine.fail_fast)."""
    cluster_ended: str | None = None
    """Set when the cluster's SLURM job ended under the tune (its time limit,
    a cancel): why (see watching_job)."""

    @property
    def reason(self) -> str | None:
        """Why the search stopped early, if it did: for the trials it stopped."""
        if self.cluster_ended is not None:
            return self.cluster_ended
        if self.signal == signal.SIGINT:
            return "the tune was interrupted (SIGINT)"
        if self.signal is not None:
            return f"the tune was stopped ({self.signal.name})"
        if self.failure is not None:
            return self.failure.summary
        return None


def raise_if_stopped(request: StopRequest) -> None:
    """Ends the tune by KeyboardInterrupt if a stop signal came before Tune
    ran (handling_stops records it there)."""
    if request.signal is not None:
        raise KeyboardInterrupt


@contextmanager
def handling_stops(request: StopRequest) -> Iterator[Callable[[], None]]:
    """Handles SIGINT and SIGTERM into `request` (main thread only), from
    before Ray starts, instead of the default action killing the tuner with
    its temp dirs left behind. A first stop before Tune runs is recorded, and
    the driver ends the tune at its next check (once Ray is up, before Tune
    starts: `raise_if_stopped`), so what the start made is cleaned up on the
    way out. Raising KeyboardInterrupt in the handler then was lost where it
    landed in code Python runs for itself while Ray started ("Exception
    ignored in ..."), and the tune ran on. A second stop raises at once.

    Yields a function that installs the handlers again: `ray.init` sets
    SIGTERM handlers of its own (they exit by SystemExit, which cleans up
    too), so call it once Ray is up.
    """

    def handle(signum, frame):
        if request.signal is not None:
            raise KeyboardInterrupt
        request.signal = signal.Signals(signum)
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's: it is running
            signal.raise_signal(signal.SIGUSR1)
        else:
            print(
                "gpkg.ray: stopping (stop again to end at once)",
                file=sys.stderr,
                flush=True,
            )

    def install() -> None:
        for sig in HANDLED:
            signal.signal(sig, handle)

    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    install()
    try:
        yield install
    finally:
        for sig, handler in previous.items():
            # None: a handler not set from Python, which cannot be put back.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def exit_by_signal(sig: signal.Signals) -> None:
    """Ends this process by `sig` with its default action, so that Guild records
    the tune run as `terminated` (a negative exit status), as for any op."""
    signal.signal(sig, signal.SIG_DFL)
    signal.raise_signal(sig)


JOB_POLL_SECONDS = 2.0


@contextmanager
def watching_job(cluster, request: StopRequest) -> Iterator[None]:
    """While it is entered, watches the SLURM job of `cluster` (a slurm
    ray-cluster remote; else does nothing): once the job is within the
    remote's `stop-before` seconds of its time limit, or no longer runs (a
    cancel), sets `request.cluster_ended` and stops the search as a first
    stop signal does, so its running trials end with that reason and a
    restart of the tune runs them again. Before the limit, not at it: once
    the job has ended, Ray and the driver's connection are gone (the driver
    exits after Ray's 60 s GCS timeout, and a restart resumes from what that
    attempt's journal says)."""
    if cluster is None or cluster.slurm is None:
        yield
        return
    import os
    import threading

    from gpkg_ray.errors import ClusterError
    from gpkg_ray.remote import slurm

    state = slurm.read_state(cluster.name)
    if state is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(JOB_POLL_SECONDS):
            try:
                job = slurm.job_state(state["job"])
            except ClusterError:  # squeue did not answer this time
                continue
            reason = _job_ending(job, cluster.slurm.stop_before)
            if reason:
                request.cluster_ended = reason
                if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's
                    os.kill(os.getpid(), signal.SIGUSR1)
                return

    watcher = threading.Thread(target=watch, name="slurm-job-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _job_ending(job, stop_before: float) -> str | None:
    """Why a tune on `job` must stop now, or None while it may go on."""
    if job.state not in ("RUNNING", "PENDING"):
        return job.describe()
    left = job.seconds_left
    if left is not None and left <= stop_before:
        return (
            f"SLURM job {job.job_id} is {left:g} s from its time limit "
            f"({job.time_limit}); stop-before is {stop_before:g} s"
        )
    return None
