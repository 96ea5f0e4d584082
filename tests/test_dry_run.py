"""`dry-run=yes`: what a tune would do, in this process (the space, the
first trials of its seeded searcher, resources, the time from earlier
tunes); tests/test_search_e2e.py checks its trials against a real tune's."""

from __future__ import annotations

import pytest
from guild import guildfile

from gpkg_ray.dry_run import dry_run_lines, first_trials, time_estimate
from gpkg_ray.engine.searchers import build_search
from gpkg_ray.preparation import CheckedTune
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Settings, load_spec

GUILD_YML = """
- model: ''
  extends: gpkg.ray/tune
  operations:
    fit:
      main: fit
      flags: {x: 0.5, n: 2, act: relu}
    tune:
      config:
        steps: [fit]
        optimize:
          - min: loss
        space:
{space}
"""


def _checked(project, space: str, **settings) -> CheckedTune:
    indented = "\n".join(" " * 10 + line for line in space.strip().splitlines())
    project.write("guild.yml", GUILD_YML.replace("{space}", indented))
    project.write("fit.py", "")
    tune = guildfile.for_dir(str(project.path)).models[""].get_operation("tune")
    spec = load_spec(tune, Settings(**settings))
    return CheckedTune(spec, None, (), str(project.path), ())


def test_a_grid_says_its_size_and_its_first_points(project):
    checked = _checked(
        project, "x: [0.1, 0.2, 0.3]\nact: [relu, tanh]", search="grid", max_trials=4
    )

    lines = dry_run_lines(checked, 3, [], "tune", cpus_here=2)

    assert "Grid: 6 points (3 x 2); max-trials=4 runs the first 4" in lines
    assert "Search: grid, seed 3, 4 trials" in lines
    at = lines.index("First trials it would start:")
    assert lines[at + 1 : at + 5] == [
        "  1: x=0.1 act=relu",
        "  2: x=0.1 act=tanh",
        "  3: x=0.2 act=relu",
        "  4: x=0.2 act=tanh",
    ]
    assert "Each trial: 1 CPUs, 0 GPUs; 2 at once (this machine's 2 CPUs)" in lines
    assert lines[-1] == "Time: no earlier tune of tune to estimate it from"


@pytest.mark.parametrize("search", ["random", "tpe", "cmaes", "qmc", "nsga2"])
def test_its_first_trials_are_the_seeded_searchers_own(project, search):
    checked = _checked(project, "x: uniform[0:1]\nn: uniform[1:4]", search=search)
    spec = checked.spec

    shown = first_trials(spec, 11, 3)

    assert shown == first_trials(spec, 11, 3) != first_trials(spec, 12, 3)
    if search != "random":  # Optuna's searchers: as the tune asks them
        algorithm = build_search(spec, 11).algorithm
        algorithm.set_search_properties(
            "objective", "min", build_search(spec, 11).param_space
        )
        assert shown == [algorithm.suggest(str(n)) for n in range(3)]
    assert all(isinstance(v["n"], int) and 1 <= v["n"] <= 4 for v in shown)


def test_without_a_seed_one_is_drawn_and_shown(project):
    checked = _checked(project, "x: uniform[0:1]", search="tpe", max_trials=3)

    lines = dry_run_lines(checked, None, [], "tune")

    (search,) = [line for line in lines if line.startswith("Search:")]
    seed = int(search.split("give seed=")[1].split()[0])
    assert search == (
        f"Search: tpe, seed {seed} (drawn: give seed={seed} to run these trials), "
        "3 trials"
    )


def test_the_time_comes_from_earlier_trials_in_waves():
    earlier = [
        TrialOutcome(n, {}, "completed", 0.1, started=100.0, ended=100.0 + seconds)
        for n, seconds in ((1, 3.0), (2, 5.0))
    ]

    line = time_estimate(earlier, trials=10, at_once=2, op="tune")

    # 5 waves of the mean trial's 4 s.
    assert line == (
        "Time: about 0:20 of trials (mean trial 4.0 s over 2 trials of earlier "
        "tunes of tune), plus Ray's start"
    )
