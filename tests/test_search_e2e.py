"""Searchers, a conditional space, nested config keys and the dry run through
the real `guild` CLI, on one project: a `fit` op whose flags go to a YAML
config (`flags-dest: config:params.yml`, nested keys such as
`model.layers`), tuned once by each searcher (two trials each) and once over
a conditional space (the optimizer's own flags per option)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

pytestmark = pytest.mark.e2e

GUILD_YML = """
- model: ''
  extends: gpkg.ray/tune
  operations:
    fit:
      main: fit
      flags-dest: config:params.yml
      flags-import: all
      flags:
        optimizer:
          choices: [plain, adam, sgd]
    tune:
      config:
        steps: [fit]
        optimize:
          - min: loss
        space:
          x: uniform[-1:1]
          model.layers: uniform[1:3]
    tune-cond:
      <<: &tuner
        main: gpkg_ray.tuner
        flags-dest: args
        flags-import: no
        sourcecode: no
        output-scalars: no
        flags:
          $include: tune:tune
      config:
        steps: [fit]
        optimize:
          - min: loss
        space:
          x: uniform[-1:1]
          optimizer:
            adam:
              adam.beta1: uniform[0.8:0.99]
            sgd:
              sgd.momentum: uniform[0:0.9]
            plain: ~
"""

PARAMS = """
x: 0.5
optimizer: plain
adam:
  beta1: 0.9
sgd:
  momentum: 0.0
model:
  layers: 2
"""

FIT = """
import yaml

p = yaml.safe_load(open("params.yml"))
loss = (p["x"] - 0.3) ** 2 + 0.1 * p["model"]["layers"]
print(f"loss: {loss}")
"""

SEARCHES = ("random", "cmaes")
"""Searches run here end to end (a tune each: the suite's time). nsga2 runs end
to end in test_objectives_e2e.py; qmc and tpe share random's and cmaes's path
to Ray (engine/searchers.py `_optuna`), and their seeds and trials are checked
in-process (test_searchers.py)."""
COMMON = ("seed=5", "max-trials=2", "max-concurrent=2")


@dataclass
class Searched:
    project: object
    tunes: dict  # name -> (CompletedProcess, tune run or None)


@pytest.fixture(scope="module")
def searched(new_project) -> Iterator[Searched]:
    project = new_project()
    project.write("guild.yml", GUILD_YML)
    project.write("params.yml", PARAMS)
    project.write("fit.py", FIT)
    tunes = {}

    def run(name, *flags, op="tune"):
        before = {r.id for r in project.runs_of(op)}
        result = project.tune(*flags, op=op)
        (new,) = [r for r in project.runs_of(op) if r.id not in before] or [None]
        tunes[name] = (result, new)

    run("dry-first", "dry-run=yes", "search=random", *COMMON)
    for search in SEARCHES:
        run(search, f"search={search}", *COMMON)
    run(
        "dry-cond",
        "dry-run=yes",
        "search=tpe",
        "seed=5",
        "max-trials=4",
        op="tune-cond",
    )
    run("cond", "search=tpe", "seed=5", "max-trials=4", op="tune-cond")
    run("dry-later", "dry-run=yes", "search=random", *COMMON)
    yield Searched(project, tunes)


def _trials(searched, name) -> list[dict]:
    result, run = searched.tunes[name]
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return searched.project.trials(run)


@pytest.mark.parametrize("search", SEARCHES)
def test_each_searcher_runs_its_seeded_trials(searched, search):
    result, _ = searched.tunes[search]
    trials = _trials(searched, search)

    assert f"Search: {search}, seed 5, 2 trials" in result.stdout, result.stdout
    assert [t["status"] for t in trials] == ["completed", "completed"], trials
    for trial in trials:
        assert -1 <= trial["values"]["x"] <= 1
        assert trial["values"]["model.layers"] in (1, 2, 3)


def test_a_nested_config_key_reaches_the_steps_config_file(searched):
    for trial in _trials(searched, "random"):
        params = _fit_params(searched, trial)
        assert params["model"]["layers"] == trial["values"]["model.layers"]
        assert params["x"] == pytest.approx(trial["values"]["x"])


def test_a_dry_run_shows_the_trials_the_tune_then_ran_and_runs_none(searched):
    result, dry = searched.tunes["dry-first"]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Dry run: nothing runs, no trial is started." in out
    assert "Search: random, seed 5, 2 trials" in out
    assert "Each trial: 1 CPUs, 0 GPUs; at most 2 at once" in out
    assert "Time: no earlier tune of tune to estimate it from" in out
    # No trial: no step run, no trial record, no Ray in the dry run's run dir.
    assert not os.path.exists(os.path.join(dry.dir, "trials.json"))
    assert dry.status == "completed"
    shown = _shown_trials(out)
    ran = [_shown(t["values"]) for t in _trials(searched, "random")]
    # The same trials; two at a time, the tune may number them in either order.
    assert sorted(shown) == sorted(ran)


def test_a_dry_run_after_a_tune_estimates_its_time(searched):
    result, _ = searched.tunes["dry-later"]
    assert "Time: about 0:" in result.stdout, result.stdout
    assert "trials of earlier tunes of tune), plus Ray's start" in result.stdout
    fits = searched.project.runs_of("fit")
    # Two trials of each of four tunes and four of the conditional one.
    assert len(fits) == 2 * len(SEARCHES) + 4


def test_a_conditional_space_gives_each_trial_its_options_flags_only(searched):
    trials = _trials(searched, "cond")
    assert [t["status"] for t in trials] == ["completed"] * 4
    defaults = {"adam": {"beta1": 0.9}, "sgd": {"momentum": 0.0}}
    for trial in trials:
        values = trial["values"]
        option = values["optimizer"]
        params = _fit_params(searched, trial)
        assert params["optimizer"] == option
        own = {"adam": "adam.beta1", "sgd": "sgd.momentum"}.get(option)
        assert set(values) == {"x", "optimizer"} | ({own} if own else set())
        for other, flags in defaults.items():
            if other == option:
                (flag,) = flags
                assert params[other][flag] == pytest.approx(values[own])
            else:  # the flag of an option not taken keeps its default
                assert params[other] == flags
    # The dry run showed the tune's trials, each with its option's values.
    result, _ = searched.tunes["dry-cond"]
    assert sorted(_shown_trials(result.stdout)) == sorted(
        _shown(t["values"]) for t in trials
    )


def _fit_params(searched, trial) -> dict:
    run = searched.project.run(trial["runs"]["fit"])
    with open(os.path.join(run.dir, "params.yml")) as f:
        return yaml.safe_load(f)


def _shown_trials(out: str) -> list[str]:
    lines = out.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("First trials")]
    shown = []
    for line in lines[at + 1 :]:
        if not line.startswith("  "):
            break
        shown.append(line.split(": ", 1)[1])
    return shown


def _shown(values: dict) -> str:
    from gpkg_ray.results.progress import format_values

    return format_values(values)
