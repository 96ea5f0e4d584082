"""Steps a restarted trial does not run again: those its earlier attempts
completed.

A tune restarted after a kill (or a stop) runs its interrupted trials again,
each from its first step. A step whose earlier run completed needs no new run:
the driver offers the trial its earlier runs (`offered_runs`), and the trial,
as it reaches each step, takes one of them instead of starting a new run when
`reusable_run` finds it fit: completed in the Guild home the step would run in,
a run of this tune (its tags), of the step's op, given exactly the flags the
step would be given now. Those flags include the step's dependency flags
(`operation:train=ID`), resolved to this trial's runs: `evaluate` is reused
only on the very `train` run this attempt has, reused or new.

Only runs of the same trial are offered, and only once, as its attempt starts;
a retry after a failure (max-failures) runs every step again. On a cluster's
node nothing is offered: the node's Guild home no longer holds runs that came
home, and a step there could not use one as its dependency.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.trial.outcome import TrialOutcome

COMPLETED = "completed"


def offered_runs(outcome: TrialOutcome) -> dict[str, list[str]]:
    """Step -> the trial's runs of that step in its earlier attempts, newest
    first: what the trial may reuse as its next attempt starts."""
    offered: dict[str, list[str]] = {}
    for step, run_id in reversed(outcome.earlier_runs):
        runs = offered.setdefault(step, [])
        if run_id not in runs:
            runs.append(run_id)
    return offered


def reusable_run(
    guild_home: str,
    opspec: str,
    flags: dict[str, Any],
    tags: Iterable[str],
    candidates: Iterable[str],
) -> str | None:
    """The first of `candidates` that can stand for a step run of op `opspec`
    with `flags` and `tags` in `guild_home`, or None: a run that completed
    there, of that op, tagged with every one of `tags`, given exactly those
    flags (as `guild run` is given them, values encoded as on its command
    line). An `error` or `terminated` run never qualifies, nor does a run
    still running."""
    wanted = {name: guild_api.encode_flag_val(value) for name, value in flags.items()}
    for run_id in candidates:
        if _fits(guild_api.open_run(guild_home, run_id), opspec, wanted, tags):
            return run_id
    return None


def _fits(
    run: guild_api.Run, opspec: str, flags: dict[str, str], tags: Iterable[str]
) -> bool:
    if not os.path.isdir(run.dir) or guild_api.run_status(run) != COMPLETED:
        return False
    if not set(tags) <= set(run.get("tags") or []):
        return False
    return guild_api.run_command(run) == (opspec, flags)
