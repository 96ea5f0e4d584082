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
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

from gpkg_ray.engine.optuna_objectives import (
    ObjectivesMixin,
    optuna_metric,
    tell_outcome,
)
from gpkg_ray.engine.search_inputs import SearchInputs
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import TrialResult
from gpkg_ray.tuning_spec import Choice, Fixed, Param, Range, TrialPlan, TuneSpec


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
    """A trial's values of the searched params: a point Ray can evaluate (in
    a conditional space, those of the options the trial took)."""
    return {p.key: values[p.key] for p in spec.plan.searched if p.key in values}


def _rerun_points(spec: TuneSpec, inputs: SearchInputs) -> list[dict[str, Any]]:
    return [searched_values(spec, v) for v in inputs.rerun[: inputs.trials]]


def _random(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    if spec.plan.conditional:
        # Ray's random sampling has no entries that only some trials have.
        import optuna

        return _optuna(spec, inputs, optuna.samplers.RandomSampler(seed=seed))
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

    return _optuna(spec, inputs, optuna.samplers.TPESampler(seed=seed))


def _gp(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    """Bayesian optimization: Optuna's GP sampler (it needs PyTorch, which
    the spec's check asked for before the run)."""
    import optuna

    return _optuna(spec, inputs, optuna.samplers.GPSampler(seed=seed))


def _cmaes(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    """CMA-ES on the ranges (the spec's check refused choices: Optuna would
    sample them at random beside it)."""
    import optuna

    return _optuna(spec, inputs, optuna.samplers.CmaEsSampler(seed=seed))


def _qmc(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    """Quasi-random (scrambled Sobol) points: spread more evenly than random
    ones; it learns nothing from results."""
    import optuna

    with warnings.catch_warnings():  # "QMCSampler is experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(seed=seed, scramble=True)
    return _optuna(spec, inputs, sampler)


def _nsga2(spec: TuneSpec, seed: int, inputs: SearchInputs) -> Search:
    """NSGA-II, an evolutionary search; its first generation is random."""
    from gpkg_ray.engine.nsga2 import PicklableNSGAIISampler

    population = nsga2_population(spec.settings.max_trials)
    sampler = PicklableNSGAIISampler(population_size=population, seed=seed)
    return _optuna(spec, inputs, sampler)


def nsga2_population(max_trials: int) -> int:
    """Trials per NSGA-II generation: Optuna's 50, or fewer so that a short
    tune sees about four generations (its first one is random)."""
    return max(4, min(50, max_trials // 4))


def _optuna(spec: TuneSpec, inputs: SearchInputs, sampler) -> Search:
    """The search of an Optuna sampler through Ray's OptunaSearch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    told = [
        (searched_values(spec, o.values), o)
        for o in inputs.told
        if _fits(spec, o)  # an earlier run's space may differ from this one
    ]
    kwargs: dict[str, Any] = dict(
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
    if spec.plan.conditional:
        return _conditional_search(spec, inputs, told, kwargs, note)
    algorithm = _optuna_search(told, spec.plan, **kwargs)
    return Search(
        _limited(algorithm, spec.settings.max_concurrent),
        ray_space(spec),
        inputs.trials,
        note,
    )


def _fits(spec: TuneSpec, outcome: TrialOutcome) -> bool:
    """Whether a trial's values are a point of this space: each entry that
    the trial's options make active has a value inside its domain."""
    values = outcome.values
    active: dict[str, Any] = {}
    for p in spec.plan.params:
        if not p.active(active):
            continue
        if isinstance(p.domain, Fixed):
            # The trial's own value of a fixed entry counts for nothing.
            active[p.key] = p.domain.value
        elif p.key in values and p.domain.contains(values[p.key]):
            active[p.key] = values[p.key]
        else:
            return False
    return True


def _conditional_search(
    spec: TuneSpec,
    inputs: SearchInputs,
    told: list[tuple[dict, TrialOutcome]],
    kwargs: dict[str, Any],
    note: str,
) -> Search:
    """An Optuna search of a conditional space: each trial samples the
    entries of the options it took (Optuna's define-by-run), and only those
    are told, so an inactive entry is no value to the searcher."""
    from gpkg_ray.engine.conditional import DefineByRun, tell_define_by_run

    algorithm = _optuna_search(
        [], spec.plan, space=DefineByRun(spec.plan.params), **kwargs
    )
    for values, outcome in told:
        tell_define_by_run(algorithm._ot_study, spec.plan.params, values, outcome)
    # The searcher holds the space; Ray's param space stays empty.
    return Search(
        _limited(algorithm, spec.settings.max_concurrent), {}, inputs.trials, note
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

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if error or not result or TrialResult.from_ray(result, ()).done:
                super().on_trial_complete(trial_id, result, error)
                return
            # Stopped before its end (a scheduler, the time budget): Ray's
            # would tell its last objective as a finished trial's. Pruned,
            # Optuna keeps the last value reported (on_trial_result) with it.
            import optuna

            if trial_id in self._ot_trials and trial_id not in self._completed_trials:
                self._ot_study.tell(
                    self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED
                )
                self._completed_trials.add(trial_id)

    return GuildOptunaSearch(**kwargs)


def _tell(searcher, values: dict[str, Any], outcome: TrialOutcome) -> None:
    """Tells a trial that ended to an OptunaSearch as Ray would have: a value
    if it has one (a completed trial, or one a limit stopped with its
    penalty), pruned with its last value if a scheduler stopped it, else a
    failure. A NaN or infinite objective (a journal of an older gpkg.ray may
    hold one; a trial fails on it now) is a failure too."""
    value = outcome.objective
    finite = value is not None and math.isfinite(value)
    if outcome.status == "stopped" and not outcome.penalized:
        last = [value] if finite else None
        searcher.add_evaluated_point(
            values, value if finite else None, pruned=True, intermediate_values=last
        )
    elif not finite:
        searcher.add_evaluated_point(values, 0.0, error=True)
    else:
        searcher.add_evaluated_point(values, value)


SEARCHERS: dict[str, Callable[[TuneSpec, int, SearchInputs], Search]] = {
    "random": _random,
    "grid": _grid,
    "tpe": _tpe,
    "gp": _gp,
    "cmaes": _cmaes,
    "qmc": _qmc,
    "nsga2": _nsga2,
}


def build_search(
    spec: TuneSpec, seed: int, inputs: SearchInputs | None = None
) -> Search:
    """The search of `spec` with the searcher's `seed`; by default all of it
    (a first attempt), else what `inputs` leave to do."""
    inputs = inputs or SearchInputs(trials=spec.settings.max_trials)
    return SEARCHERS[spec.settings.search](spec, seed, inputs)
