"""Loading a tune spec from a project's Guild op definitions."""

from __future__ import annotations

import pytest
from guild import guildfile

from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec import Choice, Fixed, Range, Settings, load_spec

GUILD_YML = """
- model: {model}
  extends: gpkg.ray/tune
  operations:
    prepare:
      main: prepare
      flags:
        size: 100
    train:
      main: train
      requires:
        - operation: prepare
      flags:
        lr: 0.01
        seed: 1
        epochs: 5
    evaluate:
      main: evaluate
      requires:
        - operation: train
          name: model
      flags:
        seed: 1
    tune:
      config:
        steps: [prepare, train, evaluate]
        optimize:
          - max: acc
        space:
{space}
"""


def _spec(
    project,
    space: str,
    settings: Settings | None = None,
    model: str = "",
    flags: dict | None = None,
):
    indented = "\n".join(" " * 10 + line for line in space.strip().splitlines())
    guild_yml = GUILD_YML.replace("{space}", indented).replace("{model}", model or "''")
    project.write("guild.yml", guild_yml)
    for name in ("prepare", "train", "evaluate"):
        project.write(f"{name}.py", "")
    gf = guildfile.for_dir(str(project.path))
    tune_opdef = gf.models[model].get_operation("tune")
    return load_spec(tune_opdef, settings or Settings(), flags)


def test_space_entries_go_to_every_step_that_defines_the_flag(project):
    spec = _spec(project, "lr: loguniform[1e-4:1e-1]\nseed: [1, 2]\ntrain:epochs: 3")
    params = {p.key: p for p in spec.plan.params}
    assert params["lr"].targets == (("train", "lr"),)
    assert params["seed"].targets == (("train", "seed"), ("evaluate", "seed"))
    assert params["train:epochs"].targets == (("train", "epochs"),)
    assert params["lr"].domain == Range(1e-4, 1e-1, log=True)
    assert params["seed"].domain == Choice((1, 2))
    assert params["train:epochs"].domain == Fixed(3)
    assert [p.key for p in spec.plan.searched] == ["lr", "seed"]


def test_step_flags_carry_sampled_and_fixed_values(project):
    plan = _spec(project, "lr: [0.1, 0.2]\nevaluate:seed: [7, 8]\ntrain:epochs: 3").plan
    sampled = {"lr": 0.2, "evaluate:seed": 8}
    assert plan.step_flags("train", sampled) == {"lr": 0.2, "epochs": 3}
    assert plan.step_flags("evaluate", sampled) == {"seed": 8}
    assert plan.step_flags("prepare", sampled) == {}
    assert plan.trial_values(sampled) == {
        "lr": 0.2,
        "evaluate:seed": 8,
        "train:epochs": 3,
    }


def test_steps_of_a_named_model_run_by_model_and_op(project):
    spec = _spec(project, "lr: [1, 2]", model="mnist")
    assert [s.opspec for s in spec.plan.steps] == [
        "mnist:prepare",
        "mnist:train",
        "mnist:evaluate",
    ]


def test_later_steps_are_pinned_to_the_trials_earlier_runs(project):
    steps = {s.name: s for s in _spec(project, "lr: [0.1, 0.2]").plan.steps}
    assert steps["train"].opspec == "train"
    assert steps["prepare"].pins == {}
    assert steps["train"].pins == {"operation:prepare": "prepare"}
    assert steps["evaluate"].pins == {"model": "train"}


def test_objective_defaults_to_the_last_step(project):
    objective = _spec(project, "lr: [0.1, 0.2]").plan.objective
    assert (objective.step, objective.scalar, objective.mode) == (
        "evaluate",
        "acc",
        "max",
    )


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("momentum: [0.1, 0.2]", "no step defines flag 'momentum'"),
        ("lr: 0.1", "'space' has only fixed values"),
        ("evaluate:lr: [0.1, 0.2]", "step evaluate defines no flag 'lr'"),
        ("size: [1, 2]\nprepare:size: [3, 4]", None),
    ],
)
def test_space_errors(project, space, message):
    if message is None:  # both forms may target one flag; the step form is later
        _spec(project, space)
        return
    with pytest.raises(SpecError) as e:
        _spec(project, space)
    assert message in str(e.value)


def test_grid_needs_lists(project):
    with pytest.raises(SpecError, match="search=grid: space entry 'lr' is a range"):
        _spec(project, "lr: uniform[0:1]", Settings(search="grid"))


# Space entries given on the command line for one tune (issue 17 item 5): the
# `space` flag, and step flags forced with --force-flags (flags the tune op does
# not define). Their parsing is in test_overrides.


def test_the_command_line_replaces_and_adds_space_entries(project):
    settings = Settings(space="lr=0.05 seed=[3, 4] prepare:size=[50,100]")
    forced = {"max-trials": 20, "train:epochs": 7}  # max-trials: the tune's own

    spec = _spec(
        project,
        "lr: loguniform[1e-4:1e-1]\nseed: [1, 2]\ntrain:epochs: 3",
        settings,
        flags=forced,
    )

    params = spec.plan.params
    # Replaced where they stood, added at the end.
    assert [p.key for p in params] == ["lr", "seed", "train:epochs", "prepare:size"]
    assert [p.domain for p in params] == [
        Fixed(0.05),
        Choice((3, 4)),
        Fixed(7),
        Choice((50, 100)),
    ]
    assert [p.given for p in params] == ["space", "space", "force-flags", "space"]
    assert [p.key for p in spec.plan.searched] == ["seed", "prepare:size"]
    sampled = {"seed": 4, "prepare:size": 50}
    assert spec.plan.step_flags("train", sampled) == {
        "lr": 0.05,
        "seed": 4,
        "epochs": 7,
    }
    assert spec.plan.step_flags("prepare", sampled) == {"size": 50}


def test_the_config_file_is_read_not_written(project):
    _spec(project, "lr: [0.1, 0.2]")
    before = (project.path / "guild.yml").read_bytes()

    spec = _spec(project, "lr: [0.1, 0.2]", Settings(space="lr=[0.3,0.4]"))

    assert spec.plan.params[0].domain == Choice((0.3, 0.4))
    assert (project.path / "guild.yml").read_bytes() == before


def test_an_entry_for_one_step_takes_that_flag_from_the_configs_entry(project):
    spec = _spec(
        project, "seed: [1, 2]\nlr: [0.1, 0.2]", Settings(space="evaluate:seed=7")
    )

    params = {p.key: p for p in spec.plan.params}
    assert params["seed"].targets == (("train", "seed"),)
    assert params["evaluate:seed"].targets == (("evaluate", "seed"),)
    sampled = {"seed": 2, "lr": 0.1}
    assert spec.plan.step_flags("train", sampled) == {"seed": 2, "lr": 0.1}
    assert spec.plan.step_flags("evaluate", sampled) == {"seed": 7}


def test_an_entry_for_every_step_replaces_the_configs_entries_per_step(project):
    spec = _spec(
        project,
        "train:seed: [1, 2]\nevaluate:seed: 3\nlr: [0.1, 0.2]",
        Settings(space="seed=5"),
    )

    assert [(p.key, p.domain) for p in spec.plan.params] == [
        ("lr", Choice((0.1, 0.2))),
        ("seed", Fixed(5)),
    ]
    assert spec.plan.step_flags("evaluate", {"lr": 0.1}) == {"seed": 5}


@pytest.mark.parametrize(
    ("space", "forced", "message"),
    [
        (
            "momentum=0.9",
            {},
            "flag space: no step defines flag 'momentum' (prepare: size; train: "
            "epochs, lr, operation:prepare, seed; evaluate: model, seed): set a "
            "step's flag, as FLAG=VALUE or STEP:FLAG=VALUE for one step",
        ),
        (
            None,
            {"momentum": 0.9},
            "flag 'momentum' (--force-flags): no step defines flag 'momentum' "
            "(prepare: size;",
        ),
        ("evaluate:lr=0.1", {}, "flag space: step evaluate defines no flag 'lr'"),
        (
            "lr=uniform[0.5:0.1]",
            {},
            "flag space: space entry 'lr': uniform[0.5:0.1] needs low < high",
        ),
        (
            "operation:prepare=abc",
            {},
            "flag space: space entry 'operation:prepare': operation:prepare of "
            "train is set by the trial to its own prepare run",
        ),
        (
            "lr=0.1",
            {},
            "'space' has only fixed values with the command line's lr=0.1: give "
            "a list or a range to search",
        ),
        (
            "train:lr=0.1",
            {"lr": 0.2},
            "flag lr of train is set twice on the command line (train:lr in flag "
            "space, lr with --force-flags): set it once",
        ),
    ],
)
def test_command_line_entry_errors(project, space, forced, message):
    with pytest.raises(SpecError) as e:
        _spec(project, "lr: [0.1, 0.2]", Settings(space=space), flags=forced)
    assert str(e.value).startswith(message)


def test_grid_needs_lists_given_on_the_command_line_too(project):
    settings = Settings(search="grid", space="lr=uniform[0:1]")
    with pytest.raises(SpecError, match="search=grid: space entry 'lr' is a range"):
        _spec(project, "lr: [0.1, 0.2]", settings)
