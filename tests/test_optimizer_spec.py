"""A Guild batch's proto flags and batch options -> the tune op's TuneSpec
(gpkg_ray.tuning_spec.batch), and its one-line errors: in process, no run."""

from __future__ import annotations

import pytest
from guild import guildfile

from gpkg_ray.errors import SpecError
from gpkg_ray.optimizer import planned_trials
from gpkg_ray.tuning_spec import Choice, Fixed, Range
from gpkg_ray.tuning_spec.batch import BatchRequest, batch_spec, optimizer_flag_names

GUILD_YML = """
- model: ''
  operations:
    train:
      main: train
      flags:
        lr: 0.01
        dropout: 0.1
        epochs: 2
        act:
          default: relu
          choices: [relu, tanh]
        layers:
          default: 2
          min: 1
          max: 4
    evaluate:
      main: evaluate
    pipeline:
      flags:
        lr: 0.01
      steps:
        - run: train lr=${lr}
        - name: eval/final
          run: evaluate
"""

PROTO = {"lr": 0.01, "dropout": 0.1, "epochs": 2, "act": "relu", "layers": 2}


@pytest.fixture
def train_opdef(project):
    project.write("guild.yml", GUILD_YML)
    project.write("train.py", "")
    return guildfile.for_dir(str(project.path)).models[""].get_operation("train")


def _spec(opdef, search: str = "tpe", **kw):
    flags = {**PROTO, **kw.pop("flags", {})}
    request = BatchRequest(search, kw.pop("opt_flags", {}), "train", flags, **kw)
    return batch_spec(request, opdef, "/batch/dir")


def _domains(spec) -> dict:
    return {p.key: p.domain for p in spec.plan.params}


def test_proto_flags_are_the_space(train_opdef) -> None:
    """Guild's lists and flag functions are searched; every other flag of the
    proto is fixed at its value, as the trial runs get it."""
    spec = _spec(
        train_opdef,
        flags={
            "lr": "loguniform[1e-4:1e-1]",
            "dropout": [0.1, 0.3, 0.5],
            "layers": "uniform[1:4]",
            "act": "relu",
        },
    )
    domains = _domains(spec)
    assert domains["lr"] == Range(1e-4, 1e-1, log=True)
    assert domains["dropout"] == Choice((0.1, 0.3, 0.5))
    assert domains["layers"] == Range(1, 4, integer=True)
    assert domains["epochs"] == Fixed(2)
    assert domains["act"] == Fixed("relu")
    (step,) = spec.plan.steps
    assert (step.name, step.batch) == ("train", "/batch/dir")
    assert spec.plan.params[0].targets == (("train", "lr"),)
    assert spec.plan.step_flags(
        "train", {"lr": 0.001, "dropout": 0.3, "layers": 3}
    ) == {
        **PROTO,
        "lr": 0.001,
        "dropout": 0.3,
        "layers": 3,
    }


def test_batch_options_are_the_settings(train_opdef) -> None:
    """--max-trials, --random-seed and the op's name are the tune's; the
    optimizer's own flags (-Fo) are the tune op's settings."""
    spec = _spec(
        train_opdef,
        flags={"lr": [0.1, 0.2]},
        max_trials=7,
        random_seed=2**32 - 1,
        opt_flags={"max-concurrent": 2, "scheduler": "asha", "max-time": 30},
    )
    settings = spec.settings
    assert (settings.search, settings.max_trials) == ("tpe", 7)
    assert settings.seed == (2**32 - 1) % 2**31
    assert (settings.max_concurrent, settings.scheduler, settings.max_time) == (
        2,
        "asha",
        30,
    )
    assert "max-trials" not in optimizer_flag_names()
    assert "search" not in optimizer_flag_names()
    assert "max-concurrent" in optimizer_flag_names()


@pytest.mark.parametrize(
    "objective, mode, scalar",
    [
        (None, "min", "loss"),
        ("-val_acc", "max", "val_acc"),
        ("loss_v", "min", "loss_v"),
    ],
)
def test_objective_is_guilds(train_opdef, objective, mode, scalar) -> None:
    """Guild's objective attr: `--maximize X` is `-X`, `--minimize X` and the
    default (`loss`) minimized; the trial op's scalar."""
    spec = _spec(train_opdef, flags={"lr": [0.1, 0.2]}, objective=objective)
    obj = spec.plan.objective
    assert (obj.mode, obj.scalar, obj.step) == (mode, scalar, "train")
    assert spec.plan.scheduler_metric == obj


def test_a_pipelines_objective_may_name_its_step(train_opdef) -> None:
    """`--maximize STEP#NAME` for a pipeline trial: the scalar of that step's
    run, named as the pipeline's link to it (Guild's `eval-final` for step
    `eval/final`); a plain NAME as before. One line for a step it lacks, and
    for STEP#NAME on an op that is not a pipeline."""
    pipeline = train_opdef.modeldef.get_operation("pipeline")

    def objective(raw):
        request = BatchRequest("tpe", {}, "pipeline", {"lr": [0.1, 0.2]}, raw)
        return batch_spec(request, pipeline, "/batch/dir").plan.objective

    by_step = objective("-eval/final#acc_val")
    assert (by_step.mode, by_step.scalar, by_step.step) == (
        "max",
        "eval-final#acc_val",
        "pipeline",
    )
    assert objective("train#loss").scalar == "train#loss"
    assert objective("-acc_val").scalar == "acc_val"
    with pytest.raises(SpecError) as e:
        objective("-evaluate#acc_val")
    assert str(e.value) == (
        "gpkg.ray/tpe: --maximize evaluate#acc_val: pipeline pipeline has no step "
        "'evaluate' (its steps: train, eval/final): use --maximize STEP#SCALAR"
    )
    with pytest.raises(SpecError) as e:
        _spec(train_opdef, flags={"lr": [0.1, 0.2]}, objective="evaluate#acc")
    assert str(e.value) == (
        "gpkg.ray/tpe: --minimize evaluate#acc names step evaluate, but train "
        "is not a pipeline (a `steps` op): name its scalar alone, e.g. "
        "--minimize acc"
    )


def test_grid_runs_every_point_unless_max_trials(train_opdef) -> None:
    spec = _spec(train_opdef, "grid", flags={"lr": [0.1, 0.2], "dropout": [0, 0.5]})
    assert spec.settings.max_trials == 4
    trials = planned_trials(spec)
    assert [(t["lr"], t["dropout"]) for t in trials] == [
        (0.1, 0),
        (0.1, 0.5),
        (0.2, 0),
        (0.2, 0.5),
    ]
    assert all(t["epochs"] == 2 for t in trials)
    limited = _spec(
        train_opdef, "grid", flags={"lr": [0.1, 0.2], "dropout": [0, 0.5]}, max_trials=3
    )
    assert len(planned_trials(limited)) == 3


@pytest.mark.parametrize(
    "search, kw, error",
    [
        (
            "tpe",
            {},
            "gpkg.ray/tpe: no flag of train is a list or a range: give one to "
            "search, e.g. lr=loguniform[1e-4:1e-1] or lr=[0.1,0.01]",
        ),
        (
            "grid",
            {"flags": {"lr": "loguniform[1e-4:1e-1]"}},
            "gpkg.ray/grid: flag lr=loguniform[0.0001:0.1] is a range: list values "
            "(e.g. logspace[-4:-1:4]), or use gpkg.ray/random or gpkg.ray/tpe",
        ),
        (
            "random",
            {"flags": {"act": ["relu", "sigmoid"]}},
            "gpkg.ray/random: flag act: sigmoid not allowed by flag act of train "
            "(choices: relu, tanh)",
        ),
        (
            "random",
            {"flags": {"layers": "uniform[1:9]"}},
            "gpkg.ray/random: flag layers: 9 is above the max 4 of flag layers of "
            "train",
        ),
        (
            "random",
            {"flags": {"lr": "loguniform[0:1]"}},
            "gpkg.ray/random: flag lr: loguniform bounds must be above 0 (got 0): "
            "use "
            "uniform, or a positive lower bound",
        ),
        (
            "tpe",
            {"flags": {"lr": [0.1, 0.2]}, "opt_flags": {"scheduler": "pbt"}},
            "gpkg.ray/tpe: scheduler=pbt is not offered: PBT restarts trials "
            "from other trials' checkpoints, and a trial's Guild runs cannot be "
            "paused and resumed; use one of fifo, asha, hyperband, median",
        ),
        (
            "bayes",
            {"flags": {"lr": [0.1, 0.2]}},
            "unknown optimizer 'gpkg.ray/bayes': use one of gpkg.ray/random, "
            "gpkg.ray/grid, gpkg.ray/tpe",
        ),
    ],
)
def test_errors_are_one_line(train_opdef, search, kw, error) -> None:
    with pytest.raises(SpecError) as e:
        _spec(train_opdef, search, **kw)
    assert str(e.value) == error


def test_random_and_tpe_have_no_trials_to_print(train_opdef) -> None:
    spec = _spec(train_opdef, "random", flags={"lr": [0.1, 0.2]})
    with pytest.raises(SpecError, match=r"gpkg\.ray/random picks each trial's values"):
        planned_trials(spec)
