"""Trial schedulers, by the name the `scheduler` flag uses.

Each one watches the plan's scheduler metric (`scheduler_metric`, logged at
`scheduler_time`, see trial/result.py) and may stop a trial early; none pauses a
trial to resume it later, since a trial's Guild runs cannot be resumed:

- `fifo`: runs every trial to its end.
- `asha`: Asynchronous Successive Halving. At rungs grace-period * rf^k steps, a
  trial continues only if it is in the top 1/rf of the trials that reached it.
- `hyperband`: asynchronous HyperBand: ASHA over 3 brackets with different
  grace periods, trading early stops for robustness to slow starters.
- `median`: stops a trial whose best value is worse than the median of the
  other trials' running averages at the same step (after grace-period steps,
  and once 3 other trials got there).

A trial that reaches `max-t` steps is not stopped for it: its steps end on their
own (its epochs flag), so that later steps such as `evaluate` still run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import SCHEDULER_METRIC, SCHEDULER_TIME
from gpkg_ray.tuning_spec import TuneSpec

HYPERBAND_BRACKETS = 3
MEDIAN_MIN_SAMPLES = 3


def _fifo(spec: TuneSpec) -> TrialScheduler:
    return FIFOScheduler()


def _asha(spec: TuneSpec, brackets: int = 1) -> TrialScheduler:
    settings = spec.settings
    return AsyncHyperBandScheduler(
        time_attr=SCHEDULER_TIME,
        metric=SCHEDULER_METRIC,
        mode=spec.plan.scheduler_metric.mode,
        max_t=settings.max_t,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
        brackets=brackets,
        stop_last_trials=False,
    )


def _hyperband(spec: TuneSpec) -> TrialScheduler:
    return _asha(spec, brackets=HYPERBAND_BRACKETS)


def _median(spec: TuneSpec) -> TrialScheduler:
    return _StopOnlyMedianRule(
        time_attr=SCHEDULER_TIME,
        metric=SCHEDULER_METRIC,
        mode=spec.plan.scheduler_metric.mode,
        grace_period=spec.settings.grace_period,
        min_samples_required=MEDIAN_MIN_SAMPLES,
        hard_stop=True,
    )


class _StopOnlyMedianRule(MedianStoppingRule):
    """Ray's median rule, less its pauses.

    With too few samples to compare, Ray's rule pauses a trial to let pending
    ones run, and restarts it later from scratch when it has no checkpoint: a
    second set of Guild runs for one trial. Here it continues instead.
    """

    def _on_insufficient_samples(self, tune_controller, trial, time) -> str:
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        # Ray's rule keeps every final result and later reads the metric from
        # each: keep only those that have it (a trial may end without it).
        if SCHEDULER_METRIC in result and SCHEDULER_TIME in result:
            super().on_trial_complete(tune_controller, trial, result)


SCHEDULERS: dict[str, Callable[[TuneSpec], TrialScheduler]] = {
    "fifo": _fifo,
    "asha": _asha,
    "hyperband": _hyperband,
    "median": _median,
}


def build_scheduler(spec: TuneSpec) -> TrialScheduler:
    return SCHEDULERS[spec.settings.scheduler](spec)


def describe_scheduler(spec: TuneSpec) -> str:
    """One line for the tune's output: the scheduler and what it watches."""
    settings = spec.settings
    if settings.scheduler == "fifo":
        return "fifo (every trial runs to its end)"
    watched = spec.plan.scheduler_metric.describe()
    details = f"grace-period={settings.grace_period}"
    if settings.scheduler in ("asha", "hyperband"):
        details += (
            f" reduction-factor={settings.reduction_factor:g} max-t={settings.max_t}"
        )
    return f"{settings.scheduler} on {watched} ({details})"


def unseen_progress_note(
    spec: TuneSpec, outcomes: Sequence[TrialOutcome]
) -> str | None:
    """A note for the end of a tune whose scheduler saw no trial progress: each
    trial logged its scheduler metric at most once (e.g. the objective of an
    `evaluate` step), so nothing could be stopped early."""
    if spec.settings.scheduler == "fifo" or not outcomes:
        return None
    if max(o.progress or 0 for o in outcomes) > 1:
        return None
    metric = spec.plan.scheduler_metric
    return (
        f"scheduler={spec.settings.scheduler} saw at most one value of "
        f"{metric.step}#{metric.scalar} per trial, so it could stop no trial early: "
        "set config `scheduler-metric` to a scalar a step logs as it trains "
        "(e.g. `- max: train#val_acc`)"
    )
