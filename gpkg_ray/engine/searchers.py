"""Search algorithms, by the name the `search` flag uses.

Each builder turns the searched params of a plan into what Ray Tune needs: a
search algorithm, a param space and a number of samples. To add one, write a
builder and register it in SEARCHERS.

Each algorithm limits its own concurrency (`max-concurrent`): Ray's TuneConfig
`max_concurrent_trials` ignores a BasicVariantGenerator, with a warning.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

from gpkg_ray.spec import Choice, Param, Range, TuneSpec
from gpkg_ray.trial.runner import OBJECTIVE


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


def _random(spec: TuneSpec, seed: int) -> Search:
    return Search(
        BasicVariantGenerator(
            random_state=seed, max_concurrent=spec.settings.max_concurrent
        ),
        ray_space(spec),
        spec.settings.max_trials,
    )


def _grid(spec: TuneSpec, seed: int) -> Search:
    points = grid_points(spec.plan.searched)
    trials = points[: spec.settings.max_trials]
    note = ""
    if len(points) > len(trials):
        note = (
            f"the grid has {len(points)} points; max-trials={len(trials)} runs the "
            "first of them"
        )
    # Each point is complete, so the space is never sampled; Ray needs its keys
    # to accept the points.
    return Search(
        BasicVariantGenerator(
            points_to_evaluate=trials,
            random_state=seed,
            max_concurrent=spec.settings.max_concurrent,
        ),
        ray_space(spec),
        len(trials),
        note,
    )


def grid_points(params: tuple[Param, ...]) -> list[dict[str, Any]]:
    axes = [[(p.key, v) for v in p.domain.values] for p in params]
    return [dict(point) for point in itertools.product(*axes)]


def _tpe(spec: TuneSpec, seed: int) -> Search:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    algorithm = _optuna_search(
        sampler=sampler, metric=OBJECTIVE, mode=spec.plan.objective.mode
    )
    return Search(
        _limited(algorithm, spec.settings.max_concurrent),
        ray_space(spec),
        spec.settings.max_trials,
    )


def _limited(searcher: Searcher, max_concurrent: int) -> Searcher:
    if not max_concurrent:
        return searcher
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


def _optuna_search(**kwargs):
    from ray.tune.search.optuna import OptunaSearch

    class PartialResultsOptunaSearch(OptunaSearch):
        """Ray's OptunaSearch wants the objective in every result; a trial reports
        its steps' scalars before its objective step records the objective."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if result.get(self.metric) is not None:
                super().on_trial_result(trial_id, result)

    return PartialResultsOptunaSearch(**kwargs)


SEARCHERS: dict[str, Callable[[TuneSpec, int], Search]] = {
    "random": _random,
    "grid": _grid,
    "tpe": _tpe,
}


def build_search(spec: TuneSpec, seed: int) -> Search:
    return SEARCHERS[spec.settings.search](spec, seed)
