"""A trial: its steps run in order as Guild runs, their scalars turned into results.

`Trial` knows nothing of Ray: the engine pulls its results (TrialResult, see
trial/result.py) with `next_result` and reports them, and calls `stop` to end
the trial early. A poll that finds new values makes one result, as of the last
of them. Results of the last step are held a moment (see
_hold_last_step_results). With a scheduler, the step that logs its metric
pauses while its values are decided on (see _pause_for_decision).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from gpkg_ray import faults, guild_api
from gpkg_ray.errors import TrialFailed
from gpkg_ray.resume.reuse import reusable_run
from gpkg_ray.trial.launcher import StepLauncher
from gpkg_ray.trial.limits import Limits
from gpkg_ray.trial.result import (
    TrialResult,
    non_finite_objective,
    scalar_key,
    scheduler_time,
)
from gpkg_ray.trial.run_files import RunFileError, read_value
from gpkg_ray.trial.scalars import (
    PipelineScalarWatcher,
    Scalar,
    ScalarWatcher,
    watcher_for,
)
from gpkg_ray.trial.scores import ScoreError, missing_target, needed_targets, scores
from gpkg_ray.trial.step_run import StepRun, new_run_id
from gpkg_ray.trial.workspace import Workspace
from gpkg_ray.tuning_spec import TrialPlan
from gpkg_ray.tuning_spec.objective import Target
from gpkg_ray.tuning_spec.steps import Step

POLL_SECONDS = 0.25
HOLD_SECONDS = 0.5
"""How long the last step's op must be seen running after it logged a value
before that value is reported (see Trial._hold_last_step_results): longer than
a Python op takes to exit after its last line on a busy machine."""


class Trial:
    """One trial of a plan with its sampled values."""

    def __init__(
        self,
        plan: TrialPlan,
        sampled: dict[str, Any],
        workspace: Workspace,
        launcher: StepLauncher,
        tags: tuple[str, ...] = (),
        limits: Limits = Limits(),  # noqa: B008 (frozen dataclass)
        scheduled: bool = False,
    ):
        """`scheduled`: a scheduler may stop the trial on its results."""
        self.plan = plan
        self.sampled = sampled
        self.workspace = workspace
        self.launcher = launcher
        self.tags = tuple(tags)
        self.limits = limits
        self.scheduled = scheduled
        self.runs: dict[str, str] = {}
        self.offered: dict[str, list[str]] = {}
        """Step -> runs of this trial's earlier attempts it may reuse, newest
        first (see resume.reuse); set before the trial starts its first step."""
        self.reused: dict[str, str] = {}
        self.latest = TrialResult(runs=self.runs, reused=self.reused)
        """What the trial knows now: its runs, step, scalars and objective."""
        self.found: dict[str, list[str]] = {}
        self.finished = False
        self._todo = deque(plan.steps)
        self._step: Step | None = None
        self._run: StepRun | None = None
        self._watcher: ScalarWatcher | PipelineScalarWatcher | None = None
        self._results: deque[TrialResult] = deque()
        self._held: list[TrialResult] = []
        self._progress = _Progress()
        self._started = time.monotonic()
        self._step_started = self._started
        self._ended_values: dict[Target, float] = {}
        """Values of targets known once a step ended: its run files' values,
        its wall time."""

    @property
    def running_run_id(self) -> str | None:
        """The Guild run id of the step running now, if one is."""
        return self._run.run_id if self._run is not None else None

    @property
    def ended(self) -> bool:
        """Whether the last result has been taken."""
        return self.finished and not self._results

    def next_result(self, timeout: float | None = None) -> TrialResult | None:
        """The next result, or None when `timeout` seconds pass without one.

        Raises TrialFailed when a step fails.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._results:
            if self.finished:
                raise RuntimeError("the trial has no more results")
            self._advance()
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self._results.popleft() if self._results else None

    def snapshot(self) -> TrialResult:
        """What the trial knows now, without a scheduler step."""
        latest = self.latest
        return TrialResult(
            runs=dict(self.runs),
            reused=dict(self.reused),
            step=latest.step,
            scalars=dict(latest.scalars),
            objective=latest.objective,
            objectives=latest.objectives,
            violations=latest.violations,
        )

    def stop(self) -> None:
        """Stops the running step (Guild's stop: it ends `terminated`); later
        steps do not run."""
        self._todo.clear()
        self._close_run()

    def _advance(self) -> None:
        if self._run is None:
            if self._todo:
                self._start(self._todo.popleft())
            else:
                self._finish()
            return
        assert self._step is not None and self._watcher is not None
        # Every result so far was taken, and Ray let the trial go on.
        self._run.resume()
        # Held values wait to see whether the op goes on after them.
        exit_status = self._run.wait(HOLD_SECONDS if self._held else POLL_SECONDS)
        new = self._record(
            self._step, self._watcher.poll(final=exit_status is not None)
        )
        self._queue(new, running=exit_status is None)
        if exit_status is not None:
            self._end_step(exit_status)
            return
        faults.point("steps-running")
        reason = self.limits.exceeded(self._started, self._run.op_processes())
        if reason is not None:
            self._stop_at_limit(reason)
        else:
            self._pause_for_decision()

    def _pause_for_decision(self) -> None:
        """Pauses the running step while a scheduler decides on the value it
        just reported: a run that logs epochs faster than a stop reaches it
        would otherwise go on for several, and save a model, after the step it
        was stopped at. The step goes on (resume) once Ray asks for the next
        result; a stop continues and ends it (StepRun.stop)."""
        step, run, watcher = self._step, self._run, self._watcher
        assert step is not None and run is not None and watcher is not None
        watched = self.plan.scheduler_metric.step
        if not (self.scheduled and step.name == watched and self._reports_progress()):
            return
        if run.pause():
            # What it logged between the poll and the pause. The last step's
            # values wait as ever (see _hold_last_step_results): one it logs as
            # it ends must not reach Ray as if the trial went on.
            new = self._record(step, watcher.poll())
            (self._results if self._todo else self._held).extend(new)

    def _reports_progress(self) -> bool:
        return any(result.scheduler_time is not None for result in self._results)

    def _queue(self, new: list[TrialResult], running: bool) -> None:
        if self._todo:
            self._results.extend(new)
        else:
            self._hold_last_step_results(new, running)

    def _hold_last_step_results(self, new: list[TrialResult], running: bool) -> None:
        """Results of the last step wait HOLD_SECONDS before they are reported.

        A scheduler may stop a trial on any result. On a value the last step
        logs as it ends (`evaluate`'s accuracy), that stop would cut nothing, yet
        the trial would count as stopped early. So a value is reported once the
        step's op is seen running HOLD_SECONDS after it; what an ended op logged
        is reported with the trial's end, marked done.
        """
        if running and not self._run.op_ended():
            self._results.extend(self._held)
            self._held = []
        self._held.extend(new)

    def _start(self, step: Step) -> None:
        if self.runs:
            faults.point("between-steps")  # the step before has ended
        flags = self.plan.step_flags(step.name, self.sampled)
        flags.update(
            {flag: self.runs[upstream] for flag, upstream in step.pins.items()}
        )
        earlier = self.offered.get(step.name, ())
        reused = reusable_run(
            self.workspace.guild_home, step.opspec, flags, self.tags, earlier
        )
        if reused is not None:
            self._reuse(step, reused)
            return
        run = StepRun(
            self.workspace,
            self.launcher,
            step.opspec,
            flags,
            new_run_id(),
            self.tags,
            batch=step.batch,
        )
        self._step, self._run = step, run
        self._step_started = time.monotonic()
        self._watcher = watcher_for(run.run_dir, step.pipeline)
        self.runs[step.name] = run.run_id
        self.latest.step = step.name
        self._results.append(self.snapshot())
        run.start()

    def _reuse(self, step: Step, run_id: str) -> None:
        """Takes a completed run of an earlier attempt as the step's run: its
        scalars are the step's results, reported as a new run's would be (the
        objective or the scheduler metric may be among them)."""
        self.runs[step.name] = self.reused[step.name] = run_id
        self.latest.step = step.name
        self._results.append(self.snapshot())
        watcher = watcher_for(self.workspace.run_dir(run_id), step.pipeline)
        new = self._record(step, watcher.poll(final=True))
        self.found[step.name] = sorted(watcher.latest)
        self._step_ended(step, run_id, _run_seconds(self.workspace, run_id))
        self._queue(new, running=False)

    def _end_step(self, exit_status: int) -> None:
        assert self._step is not None and self._run is not None
        step, run = self._step, self._run
        self.found[step.name] = sorted(self._watcher.latest) if self._watcher else []
        try:
            if exit_status != 0:
                raise TrialFailed(
                    f"step {step.name} (run {run.run_id[:8]}) failed with exit "
                    f"status {exit_status}: {run.error_line() or 'no error output'}"
                )
            self._step_ended(step, run.run_id, time.monotonic() - self._step_started)
        finally:
            self._close_run()

    def _step_ended(self, step: Step, run_id: str, seconds: float) -> None:
        """Values the plan needs that are known once `step` completed: its
        wall time and its run files' values (a missing file or key fails the
        trial, naming both)."""
        for target in needed_targets(self.plan):
            if target.step != step.name:
                continue
            if target.kind == "time":
                self._ended_values[target] = seconds / target.seconds
            elif target.kind == "file":
                try:
                    value = read_value(
                        self.workspace.run_dir(run_id), target.file, target.key
                    )
                except RunFileError as e:
                    raise TrialFailed(
                        f"step {step.name} (run {run_id[:8]}) {e}"
                    ) from None
                self._ended_values[target] = value

    def _stop_at_limit(self, reason: str) -> None:
        assert self._step is not None and self._run is not None
        step, run, watcher = self._step, self._run, self._watcher
        self.stop()
        self._results.extend(self._held)
        self._held = []
        if watcher is not None:  # what it logged before it stopped
            self._results.extend(self._record(step, watcher.poll(final=True)))
        if self.limits.penalty is None:
            raise TrialFailed(
                f"step {step.name} (run {run.run_id[:8]}) stopped: {reason} "
                "(set limit-penalty to score such trials instead of failing them)"
            )
        self.latest.objective = self.limits.penalty
        self.finished = True
        last = self._progress.applied(self.snapshot())
        last.stopped = reason
        self._results.append(last)

    def _finish(self) -> None:
        self._check_objective()
        if self.plan.scored_at_end:
            self._score()
        self.finished = True
        for result in [*self._held, self._progress.applied(self.snapshot())]:
            result.done = True
            self._results.append(result)
        self._held = []

    def _close_run(self) -> None:
        if self._run is not None:
            self._run.close()
        self._run = None

    def _record(self, step: Step, new: list[tuple[str, Scalar]]) -> list[TrialResult]:
        """One result for the values of one poll, as of the last of them: a
        stop decided on it stops the run at the step it really reached (the run
        is paused meanwhile, see _pause_for_decision). Schedulers count every
        value (`scheduler_time`), so a rung passed in between is not missed."""
        if not new:
            return []
        objective, watched = self.plan.objective, self.plan.scheduler_metric
        progressed = False
        for tag, scalar in sorted(new, key=lambda item: item[1].step):  # stable
            self.latest.scalars[scalar_key(step.name, tag)] = scalar.value
            if objective.plain and (step.name, tag) == (
                objective.step,
                objective.scalar,
            ):
                self._check_finite(step, scalar.value)
                self.latest.objective = scalar.value
            if step.name == watched.step and tag == watched.scalar:
                self._progress.update(scalar)
                progressed = True
        result = self.snapshot()
        return [self._progress.applied(result) if progressed else result]

    def _check_finite(self, step: Step, value: float) -> None:
        """Fails the trial on a NaN or infinite objective, before any result
        carries it: no searcher or scheduler can rank it (NaN compares false
        with everything, so it would pass for the best), and no later value of
        a diverged run is worth waiting for. The running step is stopped."""
        if math.isfinite(value):
            return
        run_id = self.runs.get(step.name, "")
        self.stop()
        self._results.clear()
        self._held = []
        raise TrialFailed(
            non_finite_objective(step.name, run_id, self.plan.objective.scalar, value)
        )

    def _check_objective(self) -> None:
        objective = self.plan.objective
        if self.latest.objective is not None or not objective.plain:
            return
        found = ", ".join(self.found.get(objective.step, [])) or "none"
        raise TrialFailed(
            f"step {objective.step} (run {self.runs[objective.step][:8]}) did not "
            f"record scalar '{objective.scalar}' (scalars found: {found})"
        )

    def _score(self) -> None:
        """Every objective's value and every constraint's violation, from
        the targets' values; fails the trial on a missing or non-finite one."""
        values = dict(self._ended_values)
        trial_seconds = time.monotonic() - self._started
        for target in needed_targets(self.plan):
            if target.kind == "time" and target.step is None:
                values[target] = trial_seconds / target.seconds
            elif target.kind == "scalar":
                key = scalar_key(target.step or "", target.name)
                if key in self.latest.scalars:
                    values[target] = self.latest.scalars[key]
        missing = missing_target(self.plan, values)
        if missing is not None:
            step = missing.step or ""
            found = ", ".join(self.found.get(step, [])) or "none"
            raise TrialFailed(
                f"step {step} (run {self.runs.get(step, '')[:8]}) did not record "
                f"scalar '{missing.name}' (scalars found: {found})"
            )
        try:
            scored = scores(self.plan, values)
        except ScoreError as e:
            raise TrialFailed(str(e)) from None
        self.latest.objective = scored.objectives[0]
        if len(scored.objectives) > 1:
            self.latest.objectives = scored.objectives
        if self.plan.constraints:
            self.latest.violations = scored.violations


def _run_seconds(workspace: Workspace, run_id: str) -> float:
    """How long a run took, by Guild's `started` and `stopped` attrs
    (microseconds): a reused run's wall time."""
    run = guild_api.open_run(workspace.guild_home, run_id)
    started, stopped = run.get("started"), run.get("stopped")
    if not isinstance(started, int) or not isinstance(stopped, int):
        return 0.0
    return max(0, stopped - started) / 1e6


class _Progress:
    """The scheduler metric's latest value and the trial's scheduler time."""

    def __init__(self):
        self.value: float | None = None
        self.time = 0
        self._count = 0

    def update(self, scalar: Scalar) -> None:
        self._count += 1
        self.value = scalar.value
        self.time = scheduler_time(scalar.step, self._count)

    def applied(self, result: TrialResult) -> TrialResult:
        """`result` with the scheduler metric, once there is a value."""
        if self.value is not None:
            result.scheduler_metric, result.scheduler_time = self.value, self.time
        return result
