"""A trial: its steps run in order as Guild runs, their scalars reported live.

`run_trial` knows nothing of Ray: it calls `report(metrics)` with every change, and
the engine passes `ray.tune.report`. Metrics reported:

- `STEP/TAG`: the latest value of each scalar of each step so far, reported once
  per scalar step the run logs (`step: N`), in order;
- `objective`: the objective's latest value, once its step has recorded it;
- `guild_runs`: step name -> Guild run id, from the moment each step starts;
- `trial_step`: the step running now.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from gpkg_ray.errors import TrialFailed
from gpkg_ray.spec import TrialPlan
from gpkg_ray.spec.steps import Step
from gpkg_ray.trial.scalars import Scalar, ScalarWatcher
from gpkg_ray.trial.step_run import StepRun, new_run_id
from gpkg_ray.trial.workspace import Workspace

OBJECTIVE = "objective"
GUILD_RUNS = "guild_runs"
TRIAL_STEP = "trial_step"

POLL_SECONDS = 0.25

Report = Callable[[dict[str, Any]], None]


def run_trial(
    plan: TrialPlan,
    sampled: dict[str, Any],
    workspace: Workspace,
    report: Report,
    tags: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Runs every step; returns the final metrics. Raises TrialFailed."""
    trial = _Trial(plan, workspace, report, tags)
    for step in plan.steps:
        trial.run_step(step, sampled)
    trial.check_objective()
    return trial.metrics


class _Trial:
    def __init__(self, plan: TrialPlan, workspace: Workspace, report: Report, tags):
        self.plan = plan
        self.workspace = workspace
        self.report = report
        self.tags = tuple(tags)
        self.runs: dict[str, str] = {}
        self.metrics: dict[str, Any] = {GUILD_RUNS: self.runs}
        self.found: dict[str, list[str]] = {}

    def run_step(self, step: Step, sampled: dict[str, Any]) -> None:
        flags = self.plan.step_flags(step.name, sampled)
        flags.update(
            {flag: self.runs[upstream] for flag, upstream in step.pins.items()}
        )
        run = StepRun(self.workspace, step.opspec, flags, new_run_id(), self.tags)
        self.runs[step.name] = run.run_id
        self.metrics[TRIAL_STEP] = step.name
        self.report(self._snapshot())
        try:
            run.start()
            exit_status = self._follow(step, run)
            if exit_status != 0:
                raise TrialFailed(
                    f"step {step.name} (run {run.run_id[:8]}) failed with exit "
                    f"status {exit_status}: {run.error_line() or 'no error output'}"
                )
        finally:
            run.close()

    def _follow(self, step: Step, run: StepRun) -> int:
        watcher = ScalarWatcher(run.run_dir)
        while (exit_status := run.wait(POLL_SECONDS)) is None:
            self._record(step, watcher.poll())
        self._record(step, watcher.poll(final=True))
        self.found[step.name] = sorted(watcher.latest)
        return exit_status

    def _record(self, step: Step, new: list[tuple[str, Scalar]]) -> None:
        """Reports new scalars once per scalar step, in order, so that each step
        a run logs reaches Ray even when several arrive in one poll."""
        objective = self.plan.objective
        for _, scalars in _by_scalar_step(new):
            for tag, scalar in scalars:
                self.metrics[f"{step.name}/{tag}"] = scalar.value
                if step.name == objective.step and tag == objective.scalar:
                    self.metrics[OBJECTIVE] = scalar.value
            self.report(self._snapshot())

    def _snapshot(self) -> dict[str, Any]:
        # Ray may hold a report after this returns: send copies, not live dicts.
        return {**self.metrics, GUILD_RUNS: dict(self.runs)}

    def check_objective(self) -> None:
        objective = self.plan.objective
        if OBJECTIVE in self.metrics:
            return
        found = ", ".join(self.found.get(objective.step, [])) or "none"
        raise TrialFailed(
            f"step {objective.step} (run {self.runs[objective.step][:8]}) did not "
            f"record scalar '{objective.scalar}' (scalars found: {found})"
        )


def _by_scalar_step(new: list[tuple[str, Scalar]]):
    """(step, [(tag, scalar), ...]) groups in step order; sort is stable."""
    ordered = sorted(new, key=lambda item: item[1].step)
    return itertools.groupby(ordered, key=lambda item: item[1].step)
