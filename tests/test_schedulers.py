"""Schedulers from a spec: what each one watches, the line the tune prints and
the note of a scheduler that saw no progress (test_early_stopping.py runs them
end to end)."""

from __future__ import annotations

import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

from gpkg_ray.engine.schedulers import (
    SCHEDULERS,
    build_scheduler,
    describe_scheduler,
    unseen_progress_note,
)
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import SCHEDULER_METRIC
from gpkg_ray.tuning_spec import (
    Choice,
    Objective,
    Param,
    Settings,
    Step,
    TrialPlan,
    TuneSpec,
)
from gpkg_ray.tuning_spec.settings import SCHEDULERS as SCHEDULER_NAMES

OBJECTIVE = Objective("acc_val", "max", "evaluate")
LOSS = Objective("loss", "min", "train")


def _spec(metric: Objective = LOSS, **settings) -> TuneSpec:
    steps = (Step("train", "train"), Step("evaluate", "evaluate"))
    params = (Param("lr", Choice((0.1, 0.2)), (("train", "lr"),)),)
    plan = TrialPlan(steps, params, OBJECTIVE, metric)
    return TuneSpec(plan, Settings(**settings))


def _ended(progress: int | None) -> TrialOutcome:
    return TrialOutcome(1, {"lr": 0.1}, status="completed", progress=progress)


def test_every_scheduler_flag_value_has_a_builder():
    assert set(SCHEDULERS) == set(SCHEDULER_NAMES)


def test_schedulers_watch_the_scheduler_metric_in_its_mode():
    asha = build_scheduler(_spec(scheduler="asha", max_t=9, grace_period=1))
    assert isinstance(asha, AsyncHyperBandScheduler)
    # The scheduler metric's mode (min train#loss), not the objective's (Ray's
    # schedulers keep it in `_mode`: there is no public accessor).
    assert (asha.metric, asha._mode) == (SCHEDULER_METRIC, "min")
    assert isinstance(build_scheduler(_spec()), FIFOScheduler)
    for name in ("hyperband", "median"):
        assert build_scheduler(_spec(scheduler=name))._mode == "min"


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({}, "fifo (every trial runs to its end)"),
        (
            {"scheduler": "asha", "max_t": 6, "reduction_factor": 2},
            "asha on min train#loss (grace-period=1 reduction-factor=2 max-t=6)",
        ),
        (
            {"scheduler": "median", "grace_period": 2},
            "median on min train#loss (grace-period=2)",
        ),
    ],
)
def test_describe_scheduler(settings, line):
    assert describe_scheduler(_spec(**settings)) == line


def test_a_scheduler_that_saw_one_value_per_trial_says_so():
    spec = _spec(OBJECTIVE, scheduler="asha")

    note = unseen_progress_note(spec, [_ended(1), _ended(None)])

    assert note == (
        "scheduler=asha saw at most one value of evaluate#acc_val per trial, so it "
        "could stop no trial early: set config `scheduler-metric` to a scalar a "
        "step logs as it trains (e.g. `- max: train#val_acc`)"
    )
    assert unseen_progress_note(spec, [_ended(1), _ended(3)]) is None
    assert unseen_progress_note(spec, []) is None
    assert unseen_progress_note(_spec(OBJECTIVE), [_ended(1)]) is None  # fifo
