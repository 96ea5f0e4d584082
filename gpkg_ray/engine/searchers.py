"""Search algorithms, by the name the `search` flag uses.

Each builder turns the searched params of a plan into what Ray Tune needs: a
search algorithm, a param space and a number of samples. To add one, write a
builder and register it in SEARCHERS.

Each algorithm limits its own concurrency (`max-concurrent`): Ray's TuneConfig
`max_concurrent_trials` ignores a BasicVariantGenerator, with a warning.

Each builder takes plain inputs (`SearchInputs`), as Ray's searchers take
`points_to_evaluate`: a resumed tune runs only what is missing (interrupted
trials first, with their values), and a model-based searcher is told the
trials that ended before (and warm-start trials) first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

from gpkg_ray.engine.optuna_objectives import (
    ObjectivesMixin,
    nsga2_sampler,
    optuna_metric,
    tell_outcome,
)
from gpkg_ray.engine.search_inputs import SearchInputs
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Choice, Param, Range, TrialPlan, TuneSpec


@dataclass
class Search:
    algorithm: Searcher | BasicVariantGenerator
    param_space: dict[str, Any]
    num_samples: int
    note: str = ""
    """Something the user should know about this search, printed at the start."""


def ray_domain(param: Param):
    domain = param.domain
    if isinstance(domain, Choice):
        return tune.choice(list(domain.values))
    assert isinstance(domain, Range), domain
    if domain.integer:
        # Ray's integer upper bounds are exclusive; Guild's are inclusive.
        sample = tune.lograndint if domain.log else tune.randint
        return sample(int(domain.low), int(domain.high) + 1)
    sample = tune.loguniform if domain.log else tune.uniform
    return sample(domain.low, domain.high)


def ray_space(spec: TuneSpec) -> dict[str, Any]:
    """Ray's param space: the searched params, by space key."""
    return {p.key: ray_domain(p) for p in spec.plan.searched}


def searched_values(spec: TuneSpec, values: dict[str, Any]) -> dict[str, Any]:
    """A trial's values of the searched params: a point Ray can evaluate."""
    return {p.key: values[p.key] for p in spec.plan.searched}


def _rerun_points(spec: TuneSpec, inputs: SearchInputs) -> list[dict[str, Any]]:
    return [searched_values(spec, v) for v in inputs.rerun[: inputs.trials]]


def _random(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    return Search(
        BasicVariantGenerator(
            points_to_evaluate=_rerun_points(spec, inputs),
            random_state=seed,
            max_concurrent=spec.settings.max_concurrent,
        ),
        ray_space(spec),
        inputs.trials,
    )


def _grid(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    points = grid_points(spec.plan.searched)
    trials = points[: spec.settings.max_trials]
    note = ""
    if len(points) > len(trials):
        note = (
            f"the grid has {len(points)} points; max-trials={len(trials)} runs the "
            "first of them"
        )
    missing = _without(trials, [searched_values(spec, v) for v in inputs.ended])
    # Each point is complete, so the space is never sampled; Ray needs its keys
    # to accept the points.
    return Search(
        BasicVariantGenerator(
            points_to_evaluate=missing,
            random_state=seed,
            max_concurrent=spec.settings.max_concurrent,
        ),
        ray_space(spec),
        len(missing),
        note,
    )


def _without(points: list[dict], done: list[dict]) -> list[dict]:
    """`points` less one occurrence of each point in `done`."""
    done = list(done)
    missing = []
    for point in points:
        if point in done:
            done.remove(point)
        else:
            missing.append(point)
    return missing


def grid_points(params: tuple[Param, ...]) -> list[dict[str, Any]]:
    axes = [[(p.key, v) for v in p.domain.values] for p in params]
    return [dict(point) for point in itertools.product(*axes)]


def _tpe(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    return _optuna(spec, inputs, sampler)


def _nsga2(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    """NSGA-II: an evolutionary search, for several objectives above all."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _optuna(spec, inputs, nsga2_sampler(seed))


def _optuna(spec: TuneSpec, inputs: SearchInputs, sampler) -> Search:
    """An OptunaSearch with `sampler`, told the trials that ended before."""
    told = [
        (searched_values(spec, o.values), o)
        for o in inputs.told
        if _fits(spec, o)  # an earlier run's space may differ from this one
    ]
    algorithm = _optuna_search(
        told,
        spec.plan,
        sampler=sampler,
        **optuna_metric(spec.plan),
        points_to_evaluate=_rerun_points(spec, inputs) or None,
    )
    note = ""
    if len(told) < len(inputs.told):
        note = (
            f"{len(inputs.told) - len(told)} earlier trials lie outside this "
            "search space: the searcher is not told them"
        )
    return Search(
        _limited(algorithm, spec.settings.max_concurrent),
        ray_space(spec),
        inputs.trials,
        note,
    )


def _fits(spec: TuneSpec, outcome: TrialOutcome) -> bool:
    return all(
        p.key in outcome.values and p.domain.contains(outcome.values[p.key])
        for p in spec.plan.searched
    )


def _limited(searcher: Searcher, max_concurrent: int) -> Searcher:
    if not max_concurrent:
        return searcher
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


def _optuna_search(told: list[tuple[dict, TrialOutcome]], plan: TrialPlan, **kwargs):
    from ray.tune.search.optuna import OptunaSearch

    class GuildOptunaSearch(ObjectivesMixin, OptunaSearch):
        """Ray's OptunaSearch, told earlier trials once its space is set.

        It also skips results without the objective: Ray's wants it in every
        result; a trial reports its steps' scalars before its objective step
        records the objective.
        """

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            if not super().set_search_properties(metric, mode, config, **spec):
                return False
            for values, outcome in told:
                if not tell_outcome(self, plan, values, outcome):
                    _tell(self, values, outcome)
            return True

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if (
                not isinstance(self.metric, list)
                and result.get(self.metric) is not None
            ):
                super().on_trial_result(trial_id, result)

    return GuildOptunaSearch(**kwargs)


def _tell(searcher, values: dict[str, Any], outcome: TrialOutcome) -> None:
    """Tells a trial that ended to an OptunaSearch as Ray would have: a value
    if it has one (a completed trial, or one a scheduler or limit stopped),
    else a failure. A NaN or infinite objective (a journal of an older
    gpkg.ray may hold one; a trial fails on it now) is a failure too."""
    if outcome.objective is None or not math.isfinite(outcome.objective):
        searcher.add_evaluated_point(values, 0.0, error=True)
    else:
        searcher.add_evaluated_point(values, outcome.objective)


SEARCHERS: dict[str, Callable[[TuneSpec, int, SearchInputs], Search]] = {
    "random": _random,
    "grid": _grid,
    "tpe": _tpe,
    "nsga2": _nsga2,
}


def build_search(
    spec: TuneSpec, seed: int, inputs: SearchInputs | None = None
) -> Search:
    """The search of `spec` with the searcher's `seed`; by default all of it
    (a first attempt), else what `inputs` leave to do."""
    inputs = inputs or SearchInputs(trials=spec.settings.max_trials)
    return SEARCHERS[spec.settings.search](spec, seed, inputs)
