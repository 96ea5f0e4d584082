"""Learning curves of a tune's trials: each value of the metric the scheduler
watched (by default the objective), read back from the trial's step run."""

from __future__ import annotations

from dataclasses import dataclass

from gpkg_ray import guild_api
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import scheduler_time
from gpkg_ray.trial.scalars import scalar_series
from gpkg_ray.tuning_spec import Objective


@dataclass(frozen=True)
class Curve:
    trial: TrialOutcome
    points: list[tuple[int, float]]
    """(time, value): time as the scheduler counted it (`scheduler_time`)."""


def learning_curves(
    outcomes: list[TrialOutcome], metric: Objective, guild_home: str
) -> list[Curve]:
    """The curve of every trial whose step run logged the metric."""
    curves = []
    for outcome in outcomes:
        run_id = outcome.runs.get(metric.step)
        if not run_id:
            continue
        series = scalar_series(guild_api.run_dir(guild_home, run_id), metric.scalar)
        points = [(scheduler_time(s.step, i), s.value) for i, s in enumerate(series, 1)]
        if points:
            curves.append(Curve(outcome, points))
    return curves
