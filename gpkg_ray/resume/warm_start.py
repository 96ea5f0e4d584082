"""Warm start: the finished trials of earlier tune runs of the same operation.

`warm-start=operation` takes every other run of the tune op; a comma-separated
list of run ids (or unique prefixes) takes those. Their trials are told to the
searcher before it suggests anything, as Guild's `prev-trials` does for its own
optimizers; they are not run again and do not count towards max-trials.
"""

from __future__ import annotations

import os

from gpkg_ray import guild_api
from gpkg_ray.errors import SpecError
from gpkg_ray.resume.journal import JOURNAL, read_journal
from gpkg_ray.trial.outcome import TrialOutcome

NONE = "no"
SAME_OPERATION = "operation"


def earlier_tune_runs(
    selector: str, opref, guild_home: str, exclude: str | None = None
) -> list[guild_api.Run]:
    """The tune runs `selector` (the warm-start flag) names, oldest first;
    raises SpecError for a run that does not exist, is ambiguous or is not a
    run of this op."""
    if selector.strip() in ("", NONE):
        return []
    runs = [r for r in guild_api.home_runs(guild_home) if r.id != exclude]
    this_op = _op_key(opref)
    if selector.strip() == SAME_OPERATION:
        chosen = [r for r in runs if _op_key(r.opref) == this_op and _has_journal(r)]
    else:
        chosen = [
            _named_run(prefix, runs, opref.op_name, this_op)
            for prefix in _ids(selector)
        ]
    return sorted(chosen, key=lambda r: r.get("started") or 0)


def warm_trials(runs: list[guild_api.Run]) -> list[TrialOutcome]:
    """The trials of `runs` that ended on their own (not the interrupted ones)."""
    trials = []
    for run in runs:
        outcomes = read_journal(run.dir).outcomes.values()
        trials += [o for o in outcomes if o.status != "running" and not o.interrupted]
    return trials


def _ids(selector: str) -> list[str]:
    return [part.strip() for part in selector.split(",") if part.strip()]


def _named_run(prefix: str, runs, op_name: str, this_op) -> guild_api.Run:
    matches = [r for r in runs if r.id.startswith(prefix)]
    usage = (
        f"use warm-start={SAME_OPERATION}, or ids of earlier runs of '{op_name}' "
        f"(guild runs -Fo {op_name})"
    )
    if not matches:
        raise SpecError(f"warm-start: no run '{prefix}' in this Guild home: {usage}")
    if len(matches) > 1:
        raise SpecError(
            f"warm-start: '{prefix}' matches {len(matches)} runs: give more of the id"
        )
    (run,) = matches
    if _op_key(run.opref) != this_op:
        raise SpecError(
            f"warm-start: run {run.short_id} is a run of '{run.opref.op_name}', not "
            f"of this '{op_name}': {usage}"
        )
    if not _has_journal(run):
        raise SpecError(
            f"warm-start: run {run.short_id} has no {JOURNAL} (made by an older "
            f"gpkg.ray, or deleted): {usage}"
        )
    return run


def _op_key(opref) -> tuple:
    return (opref.pkg_type, opref.pkg_name, opref.model_name, opref.op_name)


def _has_journal(run: guild_api.Run) -> bool:
    return os.path.exists(os.path.join(run.dir, JOURNAL))
