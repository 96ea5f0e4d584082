"""Objectives past one scalar, in this process: several objectives (a Pareto
front), weighted ones with a wall time, values from run files, constraints,
and NaN. A trial's scores are checked on the real runner, over step runs
written in a temp Guild home as Guild leaves them (see test_reuse.py); the
searchers on real Optuna studies. The tune through the real `guild` CLI is in
test_objectives_e2e.py."""

from __future__ import annotations

import json
import time

import pytest
from test_reuse import PIN, STEPS, TAGS, _step_run

from gpkg_ray import guild_api
from gpkg_ray.engine.search_inputs import SearchInputs
from gpkg_ray.engine.searchers import build_search
from gpkg_ray.errors import SpecError, TrialFailed
from gpkg_ray.results.records import record_scalars
from gpkg_ray.results.summary import summary_lines
from gpkg_ray.results.trials import best_trial, pareto_front, ranked_trials
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import TrialResult
from gpkg_ray.trial.run_files import RunFileError, read_value
from gpkg_ray.trial.runner import Trial
from gpkg_ray.trial.workspace import Workspace
from gpkg_ray.tuning_spec import Param, Range, Settings, TrialPlan, TuneSpec
from gpkg_ray.tuning_spec.objective import (
    Target,
    parse_constraints,
    parse_objectives,
)
from gpkg_ray.tuning_spec.plan import _scheduler_metric
from gpkg_ray.tuning_spec.space import Fixed

STEP_NAMES = ["train", "evaluate"]
NAN = float("nan")


def _objectives(raw):
    return parse_objectives(raw, STEP_NAMES)


def _plan(optimize, constraints=None, params=None) -> TrialPlan:
    objectives = _objectives(optimize)
    params = params or (Param("lr", Fixed(0.01), (("train", "lr"),)),)
    return TrialPlan(
        STEPS,
        tuple(params),
        objectives[0],
        objectives[0],
        more_objectives=objectives[1:],
        constraints=parse_constraints(constraints, STEP_NAMES),
    )


# Parsing


def test_each_form_of_optimize_is_read():
    (plain,) = _objectives([{"max": "acc_val"}])
    assert (plain.scalar, plain.step, plain.plain) == ("acc_val", "evaluate", True)

    acc, seconds = _objectives([{"max": "evaluate#acc"}, {"min": "train#seconds"}])
    assert (acc.describe(), seconds.describe()) == (
        "max evaluate#acc",
        "min train#seconds",
    )

    (score,) = _objectives([{"max": {"evaluate#acc": 1, "wall-minutes": -0.01}}])
    assert score.scalar == "objective" and not score.plain
    assert score.terms == (
        (Target("evaluate", "acc"), 1.0),
        (Target(None, "wall-minutes", "time"), -0.01),
    )
    assert score.describe() == ("max objective = 1*evaluate#acc - 0.01*wall-minutes")

    (from_file,) = _objectives({"max": "evaluate#metrics.json:accuracy"})
    assert from_file.scalar == "accuracy" and not from_file.plain
    (target,) = from_file.targets
    assert (target.kind, target.file, target.key) == (
        "file",
        "metrics.json",
        "accuracy",
    )

    named, other = _objectives(
        [{"max": {"acc": 1}, "name": "score"}, {"min": {"train#wall-seconds": 2}}]
    )
    assert (named.scalar, other.scalar) == ("score", "objective")
    assert other.terms[0][0] == Target("train", "wall-seconds", "time")


def test_a_constraint_is_a_bound_and_its_violation():
    (memory, accuracy) = parse_constraints(
        [
            {"max": "train#memory_mb", "limit": 2000},
            {"min": "evaluate#metrics.csv:acc", "limit": 0.5},
        ],
        STEP_NAMES,
    )
    assert memory.describe() == "train#memory_mb <= 2000"
    assert (memory.violation(2500), memory.violation(1500)) == (500, -500)
    assert accuracy.target.kind == "file"
    assert accuracy.violation(0.25) == 0.25 and accuracy.violation(0.75) < 0


BAD = {
    "unknown key": ({"maximize": "acc"}, "'optimize' uses 'maximize'"),
    "both modes": ({"max": "acc", "min": "loss"}, "needs one of max or min, not 2"),
    "a weight that is no number": (
        {"max": {"acc": "high"}},
        "'optimize' weight of 'acc' must be a number, not 'high'",
    ),
    "a zero weight": ({"max": {"acc": 0}}, "must be a finite non-zero"),
    "a file without a key": (
        {"max": "evaluate#metrics.json:"},
        "target 'evaluate#metrics.json:' names no key in metrics.json",
    ),
    "two objectives of one name": (
        [{"max": "acc"}, {"min": "evaluate#acc"}],
        "'optimize' has two objectives named 'acc': give one a `name: NAME`",
    ),
    "an unknown step": ({"max": "fit#acc"}, "names step 'fit', which is not in"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_objective_is_one_line(case):
    raw, message = BAD[case]
    with pytest.raises(SpecError) as e:
        _objectives(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"max": "train#mem"}, "needs a number as limit"),
        ({"max": "train#mem", "limit": "2GB"}, "needs a number as limit"),
        ({"below": "train#mem", "limit": 2}, "malformed 'constraints' entry"),
        ({"limit": 2}, "needs one of max or min"),
    ],
)
def test_a_bad_constraint_is_one_line(raw, message):
    with pytest.raises(SpecError) as e:
        parse_constraints([raw], STEP_NAMES)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_scheduler_watches_the_metric_named_for_it():
    """With several objectives, `scheduler-metric` (the one a scheduler
    watches) is named, or the scheduler refused (test_config_errors.py)."""
    objectives = _objectives([{"max": "acc_val"}, {"min": "train#loss"}])
    asha = Settings(scheduler="asha")

    named = _scheduler_metric(objectives, {"min": "train#loss"}, STEP_NAMES, asha)
    assert named.describe() == "min train#loss"
    with pytest.raises(SpecError):
        _scheduler_metric(objectives, None, STEP_NAMES, asha)
    (weighted,) = _objectives({"max": {"acc_val": 1, "wall-minutes": -0.1}})
    with pytest.raises(SpecError):
        _scheduler_metric((weighted,), None, STEP_NAMES, asha)


# Run files


def test_a_value_is_read_from_json_yaml_and_a_csvs_last_row(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"acc": 0.9, "val": {"acc": 0.8}}))
    (tmp_path / "m.yaml").write_text("acc: 0.7\nnested:\n  loss: 3\n")
    (tmp_path / "log.csv").write_text("epoch,acc\n0,0.1\n1,0.6\n")

    assert read_value(str(tmp_path), "m.json", "acc") == 0.9
    assert read_value(str(tmp_path), "m.json", "val.acc") == 0.8
    assert read_value(str(tmp_path), "m.yaml", "nested.loss") == 3.0
    assert read_value(str(tmp_path), "log.csv", "acc") == 0.6


@pytest.mark.parametrize(
    "file, text, key, message",
    [
        ("m.json", None, "acc", "wrote no file m.json (looked for acc in it)"),
        ("m.json", '{"loss": 1}', "acc", "m.json has no key 'acc' (keys: loss)"),
        ("m.csv", "epoch,loss\n0,1\n", "acc", "m.csv has no key 'acc'"),
        ("m.json", '{"acc": "high"}', "acc", "m.json key 'acc' holds 'high', not a"),
        ("m.json", "{", "acc", "m.json cannot be read (JSONDecodeError"),
    ],
)
def test_a_missing_file_or_key_is_one_line_naming_both(
    tmp_path, file, text, key, message
):
    if text is not None:
        (tmp_path / file).write_text(text)
    with pytest.raises(RunFileError) as e:
        read_value(str(tmp_path), file, key)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# A trial's scores, on the real runner


def _runs(home, acc=0.9, files=None, seconds=120):
    """A train run that took `seconds` (Guild's started/stopped attrs) and
    wrote `files`, and an evaluate run that logged `acc_val`."""
    train = _step_run(home, "t" * 32, "train", {"lr": 0.01})
    run = guild_api.open_run(str(home), train)
    run.write_attr("stopped", run.get("started") + int(seconds * 1e6))
    for name, text in (files or {}).items():
        with open(f"{run.dir}/{name}", "w") as f:
            f.write(text)
    evaluate = _step_run(
        home, "e" * 32, "evaluate", {PIN: train}, scalars=[("acc_val", acc, 0)]
    )
    return {"train": [train], "evaluate": [evaluate]}


def _run_trial(home, plan: TrialPlan, offered) -> list[TrialResult]:
    trial = Trial(plan, {}, Workspace(str(home / "project"), str(home)), None, TAGS)
    trial.offered = offered
    results = []
    while not trial.ended:
        results.append(trial.next_result())
    return results


def test_a_weighted_objective_with_a_steps_wall_time(tmp_path):
    """Accuracy less 0.01 per minute of train, which took 2 minutes."""
    plan = _plan({"max": {"acc_val": 1, "train#wall-minutes": -0.01}})

    last = _run_trial(tmp_path, plan, _runs(tmp_path, acc=0.9, seconds=120))[-1]

    assert last.done and last.objective == pytest.approx(0.9 - 0.02)
    assert last.to_ray()["objective"] == pytest.approx(0.88)


def test_a_time_penalty_of_the_whole_trial(tmp_path):
    """Accuracy less 0.01 per minute of the trial: its time from its start to
    its end, bounded here by the time this test spent around it."""
    plan = _plan({"max": {"acc_val": 1, "wall-minutes": -0.01}})
    offered = _runs(tmp_path, acc=0.9)
    before = time.monotonic()

    last = _run_trial(tmp_path, plan, offered)[-1]

    spent = time.monotonic() - before
    assert 0.9 - 0.01 * spent / 60 <= last.objective < 0.9


def test_several_objectives_from_scalars_files_and_times(tmp_path):
    plan = _plan(
        [
            {"max": "acc_val"},
            {"min": "train#model.json:size"},
            {"min": "train#wall-seconds"},
        ]
    )
    offered = _runs(tmp_path, files={"model.json": '{"size": 42}'}, seconds=3)

    last = _run_trial(tmp_path, plan, offered)[-1]

    assert last.objectives == [0.9, 42.0, 3.0]
    reported = last.to_ray()
    assert (reported["objective"], reported["objective_2"]) == (0.9, 42.0)
    assert TrialResult.from_ray(reported, ()).objectives == [0.9, 42.0, 3.0]


def test_constraints_give_each_violation(tmp_path):
    plan = _plan(
        {"max": "acc_val"},
        constraints=[
            {"max": "train#log.csv:memory_mb", "limit": 2000},
            {"min": "acc_val", "limit": 0.5},
        ],
    )
    offered = _runs(tmp_path, files={"log.csv": "memory_mb\n1000\n2500\n"})

    last = _run_trial(tmp_path, plan, offered)[-1]

    assert last.objective == 0.9 and last.violations == [500.0, -0.4]


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "step train (run tttttttt) wrote no file m.json (looked for size in it)"),
        ({"m.json": "{}"}, "step train (run tttttttt) m.json has no key 'size'"),
    ],
)
def test_a_missing_run_file_or_key_fails_the_trial(tmp_path, files, message):
    plan = _plan([{"max": "acc_val"}, {"min": "train#m.json:size"}])

    with pytest.raises(TrialFailed) as failed:
        _run_trial(tmp_path, plan, _runs(tmp_path, files=files))

    assert str(failed.value).startswith(message)


@pytest.mark.parametrize(
    "optimize, files, message",
    [
        (
            [{"max": "acc_val"}, {"min": "train#m.json:size"}],
            {"m.json": '{"size": NaN}'},
            "objective 'size' is nan (min train#m.json:size): it must be a finite",
        ),
        (
            {"max": {"acc_val": 1, "train#m.json:size": 1e308}},
            {"m.json": '{"size": 10}'},
            "objective 'objective' is inf",
        ),
    ],
)
def test_a_nan_or_infinite_objective_fails_the_trial(
    tmp_path, optimize, files, message
):
    """From a file, or a weighted sum that overflows: never a value."""
    plan = _plan(optimize)

    with pytest.raises(TrialFailed) as failed:
        _run_trial(tmp_path, plan, _runs(tmp_path, files=files))

    assert str(failed.value).startswith(message)


# Ranking and results


def _outcome(number, acc, seconds, violations=None, status="completed"):
    return TrialOutcome(
        number,
        {"lr": 0.01 * number},
        status=status,
        objective=acc,
        objectives=[acc, seconds],
        violations=violations,
        runs={"train": f"{number}" * 32},
    )


ACC_SECONDS = _objectives([{"max": "evaluate#acc"}, {"min": "train#seconds"}])
TRIALS = [
    _outcome(1, 0.9, 10.0),  # front: the fastest
    _outcome(2, 0.95, 20.0),  # front
    _outcome(3, 0.9, 30.0),  # dominated by 1 and 2
    _outcome(4, 0.99, 5.0, violations=[1.0]),  # best in both, but infeasible
    _outcome(5, 0.97, 40.0),  # front: the most accurate feasible
    _outcome(6, 0.99, 1.0, status="stopped"),
]


def test_the_pareto_front_is_the_feasible_completed_trials_none_dominates():
    front = pareto_front(TRIALS, ACC_SECONDS)

    assert [o.number for o in front] == [5, 2, 1]  # by the first objective
    assert best_trial(TRIALS, ACC_SECONDS[0]).number == 5


def test_an_infeasible_trial_is_never_the_best():
    trials = [_outcome(1, 0.5, 1.0), _outcome(2, 0.9, 1.0, violations=[0.1, -1])]

    assert [o.number for o in ranked_trials(trials, ACC_SECONDS[0])] == [1]


def test_the_summary_lists_the_front_and_counts_the_infeasible():
    plan = _plan(
        [{"max": "acc_val"}, {"min": "train#seconds"}],
        constraints=[{"max": "train#memory_mb", "limit": 2000}],
    )

    lines = summary_lines(TRIALS, plan.objective, ["lr"], plan=plan)

    assert lines[1] == "1 infeasible (breaking train#memory_mb <= 2000): never the best"
    assert (
        lines[2] == "Pareto front (3 trials, tagged pareto; max acc_val, min seconds):"
    )
    assert lines[3].split() == ["trial", "acc_val", "seconds", "lr", "runs"]
    assert [line.split()[0] for line in lines[4:]] == ["5", "2", "1"]


def test_a_record_has_every_objective_and_whether_it_is_feasible():
    outcome = _outcome(4, 0.99, 5.0, violations=[1.0])
    outcome.metrics = {"evaluate/acc": 0.99, "train/seconds": 5.0, "train/loss": 2}

    scalars = record_scalars(outcome, ACC_SECONDS[0], ACC_SECONDS)

    assert scalars == {"acc": 0.99, "seconds": 5.0, "feasible": 0.0, "loss": 2}


# Searchers: real Optuna studies

LR = Param("lr", Range(1e-3, 1e-1, log=True), (("train", "lr"),))


def _search(search: str, plan: TrialPlan, told=()):
    spec = TuneSpec(plan, Settings(search=search, max_trials=4))
    built = build_search(spec, 1, SearchInputs(trials=4, told=tuple(told)))
    # Under a concurrency limiter, when there is one.
    searcher = getattr(built.algorithm, "searcher", built.algorithm)
    searcher.set_search_properties(None, None, built.param_space)
    return searcher


@pytest.mark.parametrize("search", ["tpe", "nsga2"])
def test_several_objectives_and_constraints_reach_optunas_sampler(search):
    """The study has a direction per objective; earlier trials are told with
    both values and their violations, where the sampler reads them."""
    lr = LR
    plan = _plan(
        [{"max": "acc_val"}, {"min": "train#seconds"}],
        constraints=[{"max": "train#memory_mb", "limit": 2000}],
        params=(lr,),
    )
    told = [
        _outcome(1, 0.9, 10.0, violations=[-100.0]),
        _outcome(2, 0.95, 20.0, violations=[300.0]),
        _outcome(3, NAN, 20.0, violations=[0.0]),
    ]

    searcher = _search(search, plan, told)

    study = searcher._ot_study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [(t.state.name, t.values) for t in study.trials] == [
        ("COMPLETE", [0.9, 10.0]),
        ("COMPLETE", [0.95, 20.0]),
        ("FAIL", None),
    ]
    assert [t.constraints for t in study.trials[:2]] == [{"0": -100.0}, {"0": 300.0}]
    assert searcher.suggest("next")["lr"] > 0  # the sampler samples with them


@pytest.mark.parametrize("search", ["tpe", "nsga2"])
def test_the_searcher_saves_as_ray_saves_it(search, tmp_path):
    """Ray saves the searcher's state with pickle as the search goes: Optuna
    5's NSGA-II sampler holds a thread lock, which does not pickle."""
    plan = _plan([{"max": "acc_val"}, {"min": "train#seconds"}], params=(LR,))
    searcher = _search(search, plan)
    searcher.suggest("a")

    searcher.save(str(tmp_path / "searcher.pkl"))
    copy = _search(search, plan)
    copy.restore(str(tmp_path / "searcher.pkl"))

    assert len(copy._ot_study.trials) == 1
    assert copy.suggest("b") is not None


def test_a_trials_end_is_told_with_its_objectives_and_violations():
    lr = LR
    plan = _plan(
        [{"max": "acc_val"}, {"min": "train#seconds"}],
        constraints=[{"max": "train#memory_mb", "limit": 2000}],
        params=(lr,),
    )
    searcher = _search("nsga2", plan)
    for trial_id in ("a", "b"):
        searcher.suggest(trial_id)
    ended = TrialResult(
        objective=0.9, objectives=[0.9, 3.0], violations=[5.0], done=True
    )
    stopped = TrialResult(objective=0.8)  # stopped early: one value of two

    searcher.on_trial_complete("a", ended.to_ray())
    searcher.on_trial_complete("b", stopped.to_ray())

    a, b = searcher._ot_study.trials
    assert (a.state.name, a.values, a.constraints) == (
        "COMPLETE",
        [0.9, 3.0],
        {"0": 5.0},
    )
    assert b.state.name == "PRUNED"
