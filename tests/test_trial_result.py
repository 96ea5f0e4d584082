"""A trial's result: the one form that passes between trial, engine, resume and
results, and its keys in Ray's result dict."""

from __future__ import annotations

from gpkg_ray.trial.result import (
    OBJECTIVE,
    SCHEDULER_METRIC,
    SCHEDULER_TIME,
    TrialResult,
    scalar_key,
    scheduler_time,
)

STEPS = ("train", "evaluate")


def test_a_result_comes_back_from_ray_as_it_was_reported():
    result = TrialResult(
        runs={"train": "a" * 32, "evaluate": "b" * 32},
        reused={"train": "a" * 32},
        step="evaluate",
        scalars={scalar_key("train", "loss"): 0.5, scalar_key("train", "acc"): 0.8},
        objective=0.8,
        scheduler_metric=0.8,
        scheduler_time=3,
    )
    # Ray adds its own keys, the config among them, flattened with a `/`.
    reported = {
        **result.to_ray(),
        "training_iteration": 4,
        "config/lr": 0.1,
        "done": False,
    }
    assert TrialResult.from_ray(reported, STEPS) == result


def test_ray_sees_the_metrics_its_searchers_and_schedulers_watch():
    reported = TrialResult(objective=0.7, scheduler_metric=0.6, scheduler_time=2)
    ray_result = reported.to_ray()
    assert ray_result[OBJECTIVE] == 0.7
    assert (ray_result[SCHEDULER_METRIC], ray_result[SCHEDULER_TIME]) == (0.6, 2)
    # A result without a new scheduler value has no scheduler keys: schedulers
    # skip it, rather than take a stale value as a new step.
    assert SCHEDULER_TIME not in TrialResult(objective=0.7).to_ray()


def test_done_and_stopped_survive_the_round_trip():
    done = TrialResult.from_ray(TrialResult(done=True).to_ray(), STEPS)
    stopped = TrialResult.from_ray(TrialResult(stopped="max-time").to_ray(), STEPS)
    assert done.done and not done.stopped
    assert stopped.stopped == "max-time" and not stopped.done


def test_to_ray_gives_fresh_containers():
    result = TrialResult(runs={"train": "r1"}, scalars={"train/loss": 1.0})
    ray_result = result.to_ray()
    result.runs["evaluate"] = "r2"
    assert ray_result["guild_runs"] == {"train": "r1"}


def test_scheduler_time_counts_values_when_runs_log_no_step():
    assert [scheduler_time(0, n) for n in (1, 2, 3)] == [1, 2, 3]
    assert [scheduler_time(step, n) for n, step in enumerate((0, 1, 2), 1)] == [
        1,
        2,
        3,
    ]
    assert scheduler_time(10, 2) == 10
