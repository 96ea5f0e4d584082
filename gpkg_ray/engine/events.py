"""Ray Tune callbacks turned into TrialOutcome events for a TuneListener."""

from __future__ import annotations

import copy
import itertools
import os
import time
from collections.abc import Iterable

import cloudpickle
from ray.exceptions import RayActorError
from ray.tune import Callback

from gpkg_ray import faults
from gpkg_ray.errors import DISK_FULL_TEXTS, LOST_WORKER, DiskFull, TrialFailed
from gpkg_ray.listener import TuneListener
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import TrialResult
from gpkg_ray.tuning_spec import TrialPlan


class TrialEvents(Callback):
    """Numbers trials as they start, from `first_number`. A trial whose values
    are those of an interrupted trial in `rerun` is that trial's next attempt."""

    def __init__(
        self,
        plan: TrialPlan,
        listener: TuneListener,
        scheduler: str,
        first_number: int = 1,
        rerun: Iterable[TrialOutcome] = (),
    ):
        self.plan = plan
        self.listener = listener
        self.scheduler = scheduler
        self.outcomes: dict[str, TrialOutcome] = {}
        self._steps = {step.name for step in plan.steps}
        self._numbers = itertools.count(first_number)
        # Copies: a rerun restarts here, and its earlier outcome stays as it was.
        self._rerun = copy.deepcopy(list(rerun))

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.outcomes:  # a retry: on_trial_recover saw it
            return
        values = self.plan.trial_values(trial.config)
        outcome = self._take_rerun(values)
        if outcome is None:
            outcome = TrialOutcome(number=next(self._numbers), values=values)
        self.outcomes[trial.trial_id] = outcome
        self.listener.trial_started(outcome)

    def _take_rerun(self, values: dict) -> TrialOutcome | None:
        for outcome in self._rerun:
            if outcome.values == values:
                self._rerun.remove(outcome)
                outcome.restart(outcome.stop_reason or "interrupted")
                return outcome
        return None

    def on_trial_recover(self, iteration, trials, trial, **info):
        """The trial failed and Ray runs it again (max-failures)."""
        outcome = self.outcomes[trial.trial_id]
        outcome.restart(f"attempt {outcome.attempt} failed: {_error_message(trial)}")
        self.listener.trial_started(outcome)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        outcome = self.outcomes[trial.trial_id]
        self._apply_result(outcome, result)
        self.listener.trial_updated(outcome)

    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome = self.outcomes[trial.trial_id]
        result = self._apply_result(outcome, trial.last_result or {})
        if result.done:
            outcome.status = "completed"
        elif result.stopped:
            outcome.status = "stopped"
            outcome.stop_reason = result.stopped
            outcome.penalized = True
        else:  # Ray stopped it before its steps ended: the scheduler did
            outcome.status = "stopped"
            at = f" at step {outcome.progress}" if outcome.progress else ""
            outcome.stop_reason = f"stopped early by {self.scheduler}{at}"
        self._end(outcome)

    def end_running(self, reason: str) -> None:
        """Ends the trials still running when the search ended early: Ray has
        stopped them (and their Guild runs) without a trial event."""
        for outcome in self.outcomes.values():
            if outcome.status == "running":
                outcome.status = "stopped"
                outcome.stop_reason = reason
                outcome.interrupted = True  # a restart of the tune runs it again
                self._end(outcome)

    def on_trial_error(self, iteration, trials, trial, **info):
        outcome = self.outcomes[trial.trial_id]
        self._apply_result(outcome, trial.last_result or {})
        error = _error_message(trial)
        full = [text for text in DISK_FULL_TEXTS if text in error]
        if full:
            # Not the trial's failure: the tune stops (Ray ends the search on
            # a callback's error), the trial left running in the journal, so
            # a restart runs it again.
            self.listener.trial_updated(outcome)
            raise DiskFull(f"{full[0]}: trial {outcome.number}: {error}")
        outcome.status = "failed"
        outcome.objective = outcome.objectives = None
        outcome.error = error
        self._end(outcome)

    def _apply_result(self, outcome: TrialOutcome, reported: dict) -> TrialResult:
        result = TrialResult.from_ray(reported, self._steps)
        outcome.runs.update(result.runs)
        outcome.reused.update(result.reused)
        if result.objective is not None:
            outcome.objective = result.objective
        if result.objectives is not None:
            outcome.objectives = list(result.objectives)
        if result.violations is not None:
            outcome.violations = list(result.violations)
        if result.scheduler_time is not None:
            outcome.progress = result.scheduler_time
        outcome.metrics.update(result.scalars)
        return result

    def _end(self, outcome: TrialOutcome) -> None:
        outcome.ended = time.time()
        self.listener.trial_ended(outcome)
        faults.point("trial-ended")


def _error_message(trial) -> str:
    error = _pickled_error(trial)
    if error is None:
        return "the trial failed; see ray/driver.log in the tune run directory"
    cause = getattr(error, "cause", None) or error  # Ray wraps it in RayTaskError
    if isinstance(cause, TrialFailed):
        return str(cause).strip()
    if isinstance(cause, RayActorError):  # Ray's own text is a paragraph
        return (
            f"{LOST_WORKER} ({type(cause).__name__}): the node died, "
            "or Ray ended the worker; see ray/driver.log in the tune run"
        )
    return f"{type(cause).__name__}: {cause}".strip()


def _pickled_error(trial) -> BaseException | None:
    # Ray writes the error to the trial's driver-side path just before it calls
    # on_trial_error, and syncs it to storage later (get_pickled_error reads there).
    path = trial.pickled_error_file
    if not path or not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return cloudpickle.load(f)
