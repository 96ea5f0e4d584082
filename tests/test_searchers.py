"""Search algorithms: Ray domains and grid points from the spec's params, and
what a resumed search starts from."""

from __future__ import annotations

from ray.tune.search.sample import Categorical, Float, Integer

from gpkg_ray.engine.search_inputs import SearchInputs
from gpkg_ray.engine.searchers import build_search, grid_points, ray_domain
from gpkg_ray.tuning_spec import Choice, Param, Range, TuneSpec


def _param(key, domain):
    return Param(key, domain, (("train", key),))


def test_ray_domains():
    lr = ray_domain(_param("lr", Range(1e-5, 1e-1, log=True)))
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-5, 1e-1)
    layers = ray_domain(_param("layers", Range(1, 4, integer=True)))
    # Guild's integer bounds are inclusive, Ray's upper bound is exclusive.
    assert isinstance(layers, Integer) and (layers.lower, layers.upper) == (1, 5)
    act = ray_domain(_param("act", Choice(("relu", "tanh"))))
    assert isinstance(act, Categorical) and act.categories == ["relu", "tanh"]


def test_integer_samples_stay_within_inclusive_bounds():
    layers = ray_domain(_param("layers", Range(1, 3, integer=True)))
    assert set(layers.sample(size=300)) == {1, 2, 3}


def test_grid_points_are_the_product_of_the_choices():
    params = (
        _param("a", Choice((1, 2))),
        _param("b", Choice(("x", "y", "z"))),
    )
    points = grid_points(params)
    assert len(points) == 6
    assert points[0] == {"a": 1, "b": "x"}
    assert {(p["a"], p["b"]) for p in points} == {
        (a, b) for a in (1, 2) for b in ("x", "y", "z")
    }


def _spec(search: str, space: dict[str, object], max_trials: int = 4) -> TuneSpec:
    from gpkg_ray.tuning_spec import Objective, Settings, Step, TrialPlan

    params = tuple(
        _param(key, domain if isinstance(domain, Range) else Choice(tuple(domain)))
        for key, domain in space.items()
    )
    objective = Objective("acc", "max", "train")
    plan = TrialPlan((Step("train", "train"),), params, objective, objective)
    return TuneSpec(plan, Settings(search=search, max_trials=max_trials))


def test_a_resumed_grid_runs_only_the_points_not_ended():
    spec = _spec("grid", {"lr": [0.1, 0.01], "bs": [32, 64]})
    ended = ({"lr": 0.1, "bs": 32}, {"lr": 0.01, "bs": 64})

    search = build_search(spec, 1, SearchInputs(trials=2, ended=ended))

    assert search.num_samples == 2
    assert search.algorithm._points_to_evaluate == [
        {"lr": 0.1, "bs": 64},
        {"lr": 0.01, "bs": 32},
    ]


def test_a_resumed_random_search_runs_interrupted_trials_first():
    spec = _spec("random", {"lr": Range(1e-4, 1e-1, log=True)})
    rerun = ({"lr": 0.003},)

    search = build_search(spec, 1, SearchInputs(trials=3, rerun=rerun))

    assert search.num_samples == 3
    assert search.algorithm._points_to_evaluate == [{"lr": 0.003}]


def test_tpe_is_told_only_the_trials_that_fit_its_space():
    from gpkg_ray.trial.outcome import TrialOutcome

    spec = _spec("tpe", {"lr": Range(1e-4, 1e-1, log=True)})
    inside = TrialOutcome(1, {"lr": 0.01}, status="completed", objective=0.9)
    outside = TrialOutcome(2, {"lr": 5.0}, status="completed", objective=0.5)

    search = build_search(spec, 1, SearchInputs(trials=2, told=(inside, outside)))

    assert search.num_samples == 2
    assert search.note.startswith("1 earlier trials lie outside this search space")


def test_tpe_is_told_a_non_finite_objective_as_a_failure():
    """A journal of an older gpkg.ray may hold a completed trial with a NaN
    objective: Optuna refused it (ValueError), which ended a warm start."""
    from gpkg_ray.trial.outcome import TrialOutcome

    spec = _spec("tpe", {"lr": Range(1e-4, 1e-1, log=True)})
    told = [
        TrialOutcome(n, {"lr": 0.01 * n}, status="completed", objective=value)
        for n, value in ((1, float("nan")), (2, float("inf")), (3, 0.5))
    ]

    search = build_search(spec, 1, SearchInputs(trials=2, told=tuple(told)))
    search.algorithm.set_search_properties("objective", "max", search.param_space)

    trials = search.algorithm._ot_study.trials
    assert [(t.state.name, t.values) for t in trials] == [
        ("FAIL", None),
        ("FAIL", None),
        ("COMPLETE", [0.5]),
    ]
