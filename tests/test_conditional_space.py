"""Conditional spaces: a choice whose options carry entries of their own
(`optimizer: {adam: {beta1: ...}, sgd: {momentum: ...}}`), read from the
config, sampled per trial (only the options a trial takes), and refused where
a search cannot serve one. In this process; tests/test_search_e2e.py runs
one through `guild`."""

from __future__ import annotations

import pytest
from guild import guildfile

from gpkg_ray.engine.search_inputs import SearchInputs
from gpkg_ray.engine.searchers import build_search
from gpkg_ray.errors import SpecError
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Choice, Range, Settings, load_spec

GUILD_YML = """
- model: ''
  extends: gpkg.ray/tune
  operations:
    fit:
      main: fit
      flags:
        lr: 0.01
        optimizer:
          default: plain
          choices: [plain, adam, sgd]
        beta1: 0.9
        momentum: 0.0
        nesterov: no
    tune:
      config:
        steps: [fit]
        optimize:
          - min: loss
        space:
{space}
"""

SPACE = """
lr: loguniform[1e-4:1e-1]
optimizer:
  adam:
    beta1: uniform[0.8:0.99]
  sgd:
    momentum: uniform[0:0.9]
    nesterov: [yes, no]
  plain: ~
"""


def _spec(project, space: str = SPACE, search: str = "random", **settings):
    indented = "\n".join(" " * 10 + line for line in space.strip().splitlines())
    project.write("guild.yml", GUILD_YML.replace("{space}", indented))
    project.write("fit.py", "")
    tune = guildfile.for_dir(str(project.path)).models[""].get_operation("tune")
    return load_spec(tune, Settings(search=search, **settings))


def test_a_choice_with_options_of_their_own_entries(project):
    plan = _spec(project).plan

    assert [(p.key, p.when) for p in plan.params] == [
        ("lr", None),
        ("optimizer", None),
        ("beta1", ("optimizer", "adam")),
        ("momentum", ("optimizer", "sgd")),
        ("nesterov", ("optimizer", "sgd")),
    ]
    assert plan.conditional
    assert plan.params[1].domain == Choice(("adam", "sgd", "plain"))
    assert plan.params[2].domain == Range(0.8, 0.99)


def test_a_trial_gets_the_flags_of_the_option_it_took_only(project):
    plan = _spec(project).plan

    flags = plan.step_flags("fit", {"lr": 0.01, "optimizer": "adam", "beta1": 0.9})
    assert flags == {"lr": 0.01, "optimizer": "adam", "beta1": 0.9}
    # momentum and nesterov keep their Guild defaults: no flag is given.
    assert plan.step_flags("fit", {"lr": 0.01, "optimizer": "plain"}) == {
        "lr": 0.01,
        "optimizer": "plain",
    }


@pytest.mark.parametrize("search", ["random", "tpe", "nsga2"])
def test_each_trial_samples_its_options_entries_repeatably(project, search):
    spec = _spec(project, search=search, max_trials=12)

    def configs(seed):
        algorithm = build_search(spec, seed).algorithm
        found = []
        for n in range(12):
            found.append(algorithm.suggest(str(n)))
            algorithm.on_trial_complete(str(n), {"objective": n, "trial_done": True})
        return found

    first = configs(5)
    assert first == configs(5) and first != configs(6)
    entries = {
        "adam": {"lr", "optimizer", "beta1"},
        "sgd": {"lr", "optimizer", "momentum", "nesterov"},
        "plain": {"lr", "optimizer"},
    }
    assert all(set(c) == entries[c["optimizer"]] for c in first)
    assert len({c["optimizer"] for c in first}) >= 2


def test_earlier_trials_are_told_with_their_options_entries_only(project):
    spec = _spec(project, search="tpe")
    told = (
        TrialOutcome(
            1, {"lr": 0.01, "optimizer": "adam", "beta1": 0.9}, "completed", 1.0
        ),
        TrialOutcome(2, {"lr": 0.02, "optimizer": "plain"}, "stopped", 2.0),
        # A flat tune's trial (warm start): its momentum is no value here.
        TrialOutcome(3, {"lr": 0.03, "optimizer": "plain", "momentum": 0.5}, "failed"),
        TrialOutcome(4, {"lr": 0.03, "optimizer": "adam"}, "completed", 1.0),
    )

    search = build_search(spec, 1, SearchInputs(trials=2, told=told))

    trials = search.algorithm._ot_study.trials
    assert [(t.state.name, t.params, t.values) for t in trials] == [
        ("COMPLETE", {"lr": 0.01, "optimizer": "adam", "beta1": 0.9}, [1.0]),
        ("PRUNED", {"lr": 0.02, "optimizer": "plain"}, [2.0]),
        ("FAIL", {"lr": 0.03, "optimizer": "plain"}, None),
    ]
    assert search.note.startswith("1 earlier trials lie outside this search space")


BAD_SPACES = {
    "one option": (
        "optimizer:\n  adam:\n    beta1: uniform[0.8:0.99]",
        "random",
        "space entry 'optimizer' has one option (adam): give two or more",
    ),
    "option holding a value": (
        "optimizer:\n  adam: 0.9\n  sgd: ~",
        "random",
        "space entry 'optimizer': option 'adam' holds 0.9: give the option's own "
        "entries as a mapping",
    ),
    "option outside the flag's choices": (
        "optimizer:\n  adam: ~\n  rmsprop: ~",
        "random",
        "space entry 'optimizer': rmsprop not allowed by flag optimizer of fit",
    ),
    "an entry twice": (
        "optimizer:\n  adam:\n    lr: 0.1\n  sgd:\n    lr: 0.2",
        "random",
        "space entry 'lr' is given twice in a conditional space",
    ),
    "grid": (SPACE, "grid", "search=grid: space entry 'lr' is a range"),
    "gp": (
        SPACE.replace("loguniform[1e-4:1e-1]", "0.01"),
        "qmc",
        "search=qmc cannot search a conditional space (entry 'beta1' belongs to "
        "option adam of 'optimizer'): use search=random, tpe, nsga2",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_conditional_space_errors(project, case):
    space, search, message = BAD_SPACES[case]
    with pytest.raises(SpecError) as e:
        _spec(project, space, search=search)
    assert str(e.value).startswith(message), str(e.value)
