"""The trials a tune attempt starts from.

A tune run restarted with `guild run --restart` reads its journal: trials that
ended stay as they are (not run again), trials that were interrupted (the tune
was stopped, or killed) run again first, under their own numbers, as their next
attempt. Warm-start trials of other tune runs are told to the searcher only.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from gpkg_ray import faults, guild_api
from gpkg_ray.files import remove_written_aside
from gpkg_ray.results.report import REPORT_DIR
from gpkg_ray.resume.journal import read_journal
from gpkg_ray.resume.leftovers import end_attempt, settle_runs
from gpkg_ray.resume.warm_start import warm_trials
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import non_finite_objective, scalar_key
from gpkg_ray.trial.scalars import watcher_for
from gpkg_ray.tuning_spec import TrialPlan

KILLED = "the tune was killed"


@dataclass
class Prior:
    attempt: int = 1
    """Number of the attempt about to start (1: a tune's first run)."""
    seed: int | None = None
    """The seed the first attempt used."""
    finished: list[TrialOutcome] = field(default_factory=list)
    """Trials of earlier attempts that ended on their own: kept as they are."""
    rerun: list[TrialOutcome] = field(default_factory=list)
    """Interrupted trials of earlier attempts: run again, first."""
    closed: list[TrialOutcome] = field(default_factory=list)
    """Trials a killed attempt left running, closed now (finished or rerun)."""
    warm: list[TrialOutcome] = field(default_factory=list)
    warm_runs: list[str] = field(default_factory=list)
    ended_processes: int = 0
    settled_runs: list[str] = field(default_factory=list)

    @property
    def told(self) -> list[TrialOutcome]:
        """Trials the searcher learns from before it suggests anything."""
        return self.finished + self.warm

    @property
    def next_number(self) -> int:
        return max((o.number for o in self.finished + self.rerun), default=0) + 1

    def merged(self, new: list[TrialOutcome]) -> list[TrialOutcome]:
        """Every trial of the tune run, by number, with `new`, this attempt's
        outcomes: a trial's outcome in this attempt wins over an earlier one."""
        by_number = {o.number: o for o in self.finished + self.rerun}
        by_number.update((o.number, o) for o in new)
        return [by_number[n] for n in sorted(by_number)]

    def remaining(self, max_trials: int) -> int:
        """Trials still to run (interrupted ones included) for `max_trials`."""
        return max(0, max_trials - len(self.finished))

    def lines(self, max_trials: int) -> list[str]:
        """What a restart found, for the tune's output."""
        lines = []
        if self.attempt > 1:
            lines.append(
                f"Resuming (attempt {self.attempt}): {len(self.finished)} trials "
                f"ended, {len(self.rerun)} interrupted run again, "
                f"{self.remaining(max_trials)} of {max_trials} to run"
            )
        if self.ended_processes or self.settled_runs:
            lines.append(
                f"Ended what the last attempt left: {self.ended_processes} "
                f"processes, {len(self.settled_runs)} runs marked terminated"
            )
        if self.warm_runs:
            runs = ", ".join(run_id[:8] for run_id in self.warm_runs)
            lines.append(
                f"Warm start: {len(self.warm)} trials of {len(self.warm_runs)} "
                f"earlier runs ({runs}) told to the searcher"
            )
        return lines


def load_prior(
    run_dir: str,
    run_id: str,
    plan: TrialPlan,
    guild_home: str,
    tag: str,
    warm_runs: Iterable[guild_api.Run] = (),
) -> Prior:
    """Reads the tune run's journal and ends what a killed attempt left (its
    processes, runs without a status) before anything new starts; with the
    trials of `warm_runs` (warm start)."""
    state = read_journal(run_dir)
    warm_runs = list(warm_runs)
    prior = Prior(
        attempt=len(state.attempts) + 1,
        seed=state.seed,
        warm=warm_trials(warm_runs),
        warm_runs=[r.id for r in warm_runs],
    )
    if not state.attempts:  # a first attempt: nothing of this tune exists yet
        return prior
    prior.ended_processes = sum(end_attempt(a) for a in state.attempts)
    faults.point("resume-cleanup")  # a restart killed while it cleans up
    journaled = {
        run_id
        for o in state.outcomes.values()
        if o.status == "running"
        for run_id in o.runs.values()
    }
    prior.settled_runs = settle_runs(guild_home, tag, run_id, journaled)
    for directory in (run_dir, os.path.join(run_dir, REPORT_DIR)):
        remove_written_aside(directory)  # results a kill cut: written anew
    for outcome in sorted(state.outcomes.values(), key=lambda o: o.number):
        if outcome.status == "running":
            _close_killed(outcome, plan, guild_home)
            prior.closed.append(outcome)
        (prior.rerun if outcome.interrupted else prior.finished).append(outcome)
    return prior


def _close_killed(outcome: TrialOutcome, plan: TrialPlan, guild_home: str) -> None:
    """A trial the killed attempt left running: completed if all its steps
    completed while the tune was down and its objective is one scalar (its
    objective recorded; failed if that is NaN or infinite), else
    interrupted."""
    outcome.ended = time.time()
    runs = {
        step: guild_api.open_run(guild_home, run_id)
        for step, run_id in outcome.runs.items()
    }
    pipelines = {step.name: step.pipeline for step in plan.steps}
    done = all(
        step.name in runs and guild_api.exit_status(runs[step.name]) == 0
        for step in plan.steps
    )
    # Scores known only at a trial's end (several objectives, a wall time,
    # constraints: see TrialPlan.scored_at_end) are not rebuilt here: the
    # trial runs again, and takes its completed steps' runs (resume.reuse).
    if done and not plan.scored_at_end:
        for step, run in runs.items():
            watcher = watcher_for(run.dir, pipelines.get(step, False))
            for tag, scalar in watcher.latest_final().items():
                outcome.metrics[scalar_key(step, tag)] = scalar.value
        objective = plan.objective
        value = outcome.metrics.get(scalar_key(objective.step, objective.scalar))
        if value is not None and not math.isfinite(value):
            run_id = outcome.runs[objective.step]
            outcome.status = "failed"
            outcome.error = non_finite_objective(
                objective.step, run_id, objective.scalar, value
            )
            return
        if value is not None:
            outcome.status, outcome.objective = "completed", value
            return
    outcome.status, outcome.stop_reason, outcome.interrupted = "stopped", KILLED, True
