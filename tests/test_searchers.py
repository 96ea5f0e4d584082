"""Search algorithms: Ray domains and grid points from the spec's params, and
what a resumed search starts from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def _suggestions(spec: TuneSpec, seed: int, count: int) -> list[dict]:
    """The first `count` configs the search of `spec` suggests, each trial
    told an objective as it ends (so that model-based ones model)."""
    search = build_search(spec, seed)
    algorithm = search.algorithm
    algorithm.set_search_properties("objective", "max", search.param_space)
    configs = []
    for n in range(count):
        config = algorithm.suggest(f"t{n}")
        configs.append(config)
        value = -sum((v if isinstance(v, float) else 0.0) ** 2 for v in config.values())
        algorithm.on_trial_complete(f"t{n}", {"objective": value, "trial_done": True})
    return configs


RANGES = {"x": Range(-2.0, 2.0), "y": Range(1e-3, 1.0, log=True)}


@pytest.mark.parametrize("search", ["tpe", "cmaes", "qmc", "nsga2"])
def test_each_optuna_search_repeats_its_trials_with_its_seed(search):
    spec = _spec(search, RANGES, max_trials=12)

    first = _suggestions(spec, 7, 12)

    assert first == _suggestions(spec, 7, 12)
    assert first != _suggestions(spec, 8, 12)
    for config in first:
        assert -2.0 <= config["x"] <= 2.0 and 1e-3 <= config["y"] <= 1.0


def test_nsga2_generations_fit_short_tunes():
    from gpkg_ray.engine.searchers import nsga2_population

    assert [nsga2_population(n) for n in (5, 20, 100, 1000)] == [4, 5, 25, 50]


def test_gp_repeats_its_trials_with_its_seed():
    """Optuna's GP sampler needs PyTorch, which only .torch/ holds (for the
    PyTorch example): checked in a process of its own with it on the path."""
    torch_dir = Path(__file__).parent.parent / ".torch"
    if not (torch_dir / "torch").is_dir():
        pytest.skip("PyTorch is not in .torch/ (see the README's test command)")
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_searchers import RANGES, _spec, _suggestions\n"
        "spec = _spec('gp', RANGES, max_trials=12)\n"
        "runs = [(7, 12), (7, 12), (8, 1)]\n"
        "print(json.dumps([_suggestions(spec, s, n) for s, n in runs]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(torch_dir)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    first, again, other = json.loads(out.splitlines()[-1])
    assert first == again and first[0] != other[0]
    # Past its 10 random startup trials the GP's own picks.
    assert len({round(c["x"], 9) for c in first[10:]}) == 2


def test_a_trial_a_scheduler_stopped_is_told_pruned_with_its_last_value():
    """Ray's OptunaSearch tells a trial that a scheduler stopped (its last
    result has no `done`) as COMPLETE with its last objective, as if it had
    run to its end; ours tells it PRUNED, and Optuna keeps that last value."""
    from ray.tune.search.optuna import OptunaSearch

    spec = _spec("tpe", RANGES)
    ours = build_search(spec, 1)
    rays = OptunaSearch(metric="objective", mode="max", seed=1)
    states = []
    for searcher in (ours.algorithm, rays):
        searcher.set_search_properties("objective", "max", ours.param_space)
        searcher.suggest("stopped")
        for step, value in enumerate((0.1, 0.3), start=1):
            searcher.on_trial_result(
                "stopped", {"objective": value, "training_iteration": step}
            )
        searcher.suggest("ended")
        searcher.on_trial_complete("ended", {"objective": 0.5, "trial_done": True})
        last = {"objective": 0.3, "training_iteration": 2}
        searcher.on_trial_complete("stopped", last)
        states.append([(t.state.name, t.values) for t in searcher._ot_study.trials])

    assert states[1] == [("COMPLETE", [0.3]), ("COMPLETE", [0.5])]  # Ray's
    assert states[0] == [("PRUNED", [0.3]), ("COMPLETE", [0.5])]


def test_an_earlier_trial_a_scheduler_stopped_is_told_pruned():
    from gpkg_ray.trial.outcome import TrialOutcome

    spec = _spec("tpe", {"lr": Range(1e-4, 1e-1, log=True)})
    told = (
        TrialOutcome(1, {"lr": 0.01}, status="stopped", objective=0.4),
        TrialOutcome(2, {"lr": 0.02}, status="stopped"),
        TrialOutcome(3, {"lr": 0.03}, status="stopped", objective=0.1, penalized=True),
    )

    search = build_search(spec, 1, SearchInputs(trials=2, told=told))
    search.algorithm.set_search_properties("objective", "max", search.param_space)

    trials = search.algorithm._ot_study.trials
    assert [(t.state.name, t.values) for t in trials] == [
        ("PRUNED", [0.4]),
        ("PRUNED", None),
        ("COMPLETE", [0.1]),
    ]


@pytest.mark.parametrize("search", ["random", "tpe", "cmaes", "qmc", "nsga2"])
def test_each_searcher_pickles_as_ray_keeps_it(search):
    """Ray's Tuner pickles its searcher (cloudpickle, at the start) and
    OptunaSearch saves its state with pickle: NSGA-II's thread lock and a
    conditional space's function failed there, after Ray was up."""
    import pickle

    import ray.cloudpickle

    from gpkg_ray.tuning_spec import Objective, Settings, Step, TrialPlan

    params = (_param("x", Range(-1.0, 1.0)), _param("o", Choice(("a", "b"))))
    if search == "cmaes":
        params = params[:1]
    elif search != "qmc":  # a conditional space
        params += (Param("y", Range(0.0, 1.0), (("train", "y"),), when=("o", "a")),)
    objective = Objective("acc", "max", "train")
    plan = TrialPlan((Step("train", "train"),), params, objective, objective)
    settings = Settings(search=search, max_trials=8, max_concurrent=2)
    search_ = build_search(TuneSpec(plan, settings), 5)

    ray.cloudpickle.dumps(search_.algorithm)
    searcher = search_.algorithm.searcher  # inside its ConcurrencyLimiter
    if search_.param_space:
        searcher.set_search_properties("objective", "max", search_.param_space)
    first = searcher.suggest("a")
    again = pickle.loads(pickle.dumps(searcher.__dict__))
    assert again["_ot_study"].trials[0].params == first
