"""What a killed attempt of a tune left behind, found and ended by handle.

A tune killed with SIGKILL (or a machine that went down) runs no cleanup: Ray's
agents can linger for a minute, its temp dir stays, and the trials' `guild run`
processes may go on as orphans or be gone without a status. A restart ends them
before it starts anything:

- processes the attempt recorded (pid and start time) that are still alive;
- the embedded Ray's temp dir (journaled before Ray makes it);
- its steps' stderr files in the temp dir (named while a step starts);
- runs of the tune (by its tag, or named in its journal) without an exit
  status: a step still running is stopped as `guild stop` does; every such run
  is then marked `terminated`;
- whatever else its steps left running (a `guild run` still starting an op or
  closing its run, a step launcher), found by the tune run's id in their
  environment (environ.STEP_TUNE_VAR).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

import psutil

from gpkg_ray import guild_api
from gpkg_ray.environ import RAY_TEMP_PREFIX, STEP_TUNE_VAR
from gpkg_ray.processes import find_processes, handles, process_tree, stop_processes


def attempt_processes(procs: list[psutil.Process]) -> list[list[float]]:
    """(pid, start time) of each process: what a later attempt needs to find
    exactly these processes again, not others that reuse a pid."""
    return handles(procs)


def end_attempt(attempt: dict[str, Any]) -> int:
    """Ends what a journal's attempt entry recorded; returns how many processes
    were still alive."""
    alive = find_processes(attempt.get("processes") or [])
    stop_processes(alive)
    _remove_ray_temp_dir(attempt.get("ray_temp_dir"))
    return len(alive)


def _remove_ray_temp_dir(path: str | None) -> None:
    # Only a dir of the shape embedded_ray makes: the journal could be edited.
    if not path or not os.path.basename(path).startswith(RAY_TEMP_PREFIX):
        return
    if os.path.dirname(os.path.abspath(path)) != os.path.abspath(tempfile.gettempdir()):
        return
    shutil.rmtree(path, ignore_errors=True)


def settle_runs(guild_home: str, tag: str, exclude: str, known: set[str]) -> list[str]:
    """Ends the runs of the tune: those tagged `tag` and those in `known` (the
    runs its journal names), but `exclude` (the tune run), that have no exit
    status; returns their ids.

    Their ops are stopped as `guild stop` does; then whatever else the tune's
    steps left running is stopped, found by the tune run's id in its
    environment: a `guild run` still starting one of them (a kill can come
    before it made its run, or while the run is pending), forked from a step
    launcher or not, which nothing else of the tune's would stop.
    """
    leftovers = step_processes(exclude)
    runs = {
        r.id: r for r in guild_api.home_runs(guild_home) if tag in (r.get("tags") or [])
    }
    runs.update((run_id, guild_api.open_run(guild_home, run_id)) for run_id in known)
    runs.pop(exclude, None)
    open_runs = {i: r for i, r in runs.items() if guild_api.exit_status(r) is None}
    for run in open_runs.values():
        _stop_op(run)
    stop_processes([p for proc in leftovers for p in process_tree(proc)])
    settled = []
    for run in open_runs.values():
        if os.path.isdir(run.dir):
            # Terminated unless Guild recorded how it ended meanwhile. Its markers
            # go either way: LOCK.remote, say, on a run of a cluster's node that
            # the killed tune was bringing home (Guild shows it `running`,
            # whatever its attrs say).
            guild_api.close_run(run, guild_api.TERMINATED, keep_ended=True)
            settled.append(run.id)
    return settled


def _stop_op(run: guild_api.Run) -> None:
    """Stops the run's op as `guild stop` does, if it still runs."""
    op = guild_api.live_op(run)
    if op is not None:
        guild_api.stop_op(op)
        # An orphaned `guild run` records the exit status itself.
        guild_api.wait_for_exit_status(run)


def step_processes(tune_run_id: str) -> list[psutil.Process]:
    """The processes started for the steps of tune run `tune_run_id` that still
    run: STEP_TUNE_VAR says so in their environment (as they started: a
    forked step has its launcher's)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if (
                proc.environ().get(STEP_TUNE_VAR) == tune_run_id
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
    return found
