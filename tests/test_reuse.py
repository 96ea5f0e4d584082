"""A restarted trial's steps that an earlier attempt completed: which runs may
stand for a step, and a trial that takes them instead of running its steps.

In-process and cheap: step runs written in a temp Guild home as Guild leaves
them (attrs, output scalars), read back by Guild's own `guild.run.Run`. The
restart of a real tune is in test_resume.py.
"""

from __future__ import annotations

import pytest
from guild.summary import SummaryWriter

from gpkg_ray import guild_api
from gpkg_ray.errors import TrialFailed
from gpkg_ray.resume.prior import _close_killed
from gpkg_ray.resume.reuse import offered_runs, reusable_run
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import OBJECTIVE
from gpkg_ray.trial.runner import Trial
from gpkg_ray.trial.workspace import Workspace
from gpkg_ray.tuning_spec import Objective, Param, TrialPlan
from gpkg_ray.tuning_spec.space import Fixed
from gpkg_ray.tuning_spec.steps import Step

TAGS = ("tune-1234abcd",)
PIN = "operation:train"
STEPS = (Step("train", "train"), Step("evaluate", "evaluate", pins={PIN: "train"}))
ACC = Objective("acc_val", "max", "evaluate")
NAN = float("nan")
PLAN = TrialPlan(STEPS, (Param("lr", Fixed(0.01), (("train", "lr"),)),), ACC, ACC)


def _step_run(
    home,
    run_id: str,
    opspec: str,
    flags: dict,
    exit_status: int | None = 0,
    tags=TAGS,
    scalars=(),
) -> str:
    """A run of `opspec` as `guild run OPSPEC flag=value...` leaves it:
    `scalars` ((tag, value, step), ...) are its output scalars."""
    run = guild_api.open_run(str(home), run_id)
    assigns = [f"{k}={guild_api.encode_flag_val(v)}" for k, v in flags.items()]
    opref = guild_api.package_opref("project", "0", opspec)
    attrs = {
        "flags": flags,
        "tags": list(tags),
        "run_params": {"opspec": opspec, "flags": assigns},
    }
    guild_api.init_run(run, opref, attrs)
    # As Guild's output scalars are written.
    writer = SummaryWriter(run.guild_path())
    for tag, value, step in scalars:
        writer.add_scalar(tag, value, step)
    writer.close()
    if exit_status is not None:
        run.write_attr("exit_status", exit_status)
    return run_id


def test_only_a_completed_run_of_the_tune_with_the_same_flags_stands_for_a_step(
    tmp_path,
):
    flags = {"lr": 0.01, "epochs": 3}
    not_fit = [
        _step_run(tmp_path, "a1", "train", flags, exit_status=1),  # error
        _step_run(tmp_path, "a2", "train", flags, exit_status=-15),  # terminated
        _step_run(tmp_path, "a3", "train", flags, exit_status=None),  # no status
        _step_run(tmp_path, "a4", "train", {"lr": 0.02, "epochs": 3}),
        _step_run(tmp_path, "a5", "train", {"lr": 0.01}),  # a flag less
        _step_run(tmp_path, "a6", "prepare", flags),  # another op
        _step_run(tmp_path, "a7", "train", flags, tags=()),  # not of this tune
        "a8",  # never made
    ]
    fit = _step_run(tmp_path, "b1", "train", flags)

    def reusable(candidates):
        return reusable_run(str(tmp_path), "train", flags, TAGS, candidates)

    assert reusable(not_fit) is None
    assert reusable([*not_fit, fit]) == fit
    assert reusable([]) is None


def test_a_downstream_run_stands_for_its_step_only_on_the_same_upstream_run(
    tmp_path,
):
    evaluate = _step_run(tmp_path, "c1", "evaluate", {PIN: "b1"})

    def reusable(upstream: str):
        flags = {PIN: upstream}
        return reusable_run(str(tmp_path), "evaluate", flags, TAGS, [evaluate])

    assert reusable("b1") == evaluate
    assert reusable("b2") is None  # train ran again: evaluate must too


def test_a_trial_is_offered_its_own_earlier_runs_newest_first():
    outcome = TrialOutcome(3, {"lr": 0.01})
    outcome.runs = {"train": "t1", "evaluate": "e1"}
    outcome.restart("the tune was killed")
    outcome.runs = {"train": "t1", "evaluate": "e2"}  # t1 reused, e2 cut short
    outcome.restart("the tune was killed")

    assert offered_runs(outcome) == {"train": ["t1"], "evaluate": ["e2", "e1"]}
    assert offered_runs(TrialOutcome(4, {"lr": 0.01})) == {}


def test_a_trial_takes_the_runs_it_completed_and_reports_their_scalars(tmp_path):
    train = _step_run(
        tmp_path,
        "t" * 32,
        "train",
        {"lr": 0.01},
        scalars=[("loss", 0.5, 0), ("loss", 0.25, 1), ("loss", 0.125, 2)],
    )
    evaluate = _step_run(
        tmp_path, "e" * 32, "evaluate", {PIN: train}, scalars=[("acc_val", 0.75, 0)]
    )
    workspace = Workspace(str(tmp_path / "project"), str(tmp_path))
    # No launcher: a step that started a run would fail.
    trial = Trial(PLAN, {}, workspace, launcher=None, tags=TAGS)
    trial.offered = {"train": [train], "evaluate": [evaluate]}

    results = []
    while not trial.ended:
        results.append(trial.next_result())

    last = results[-1]
    assert last.done and last.objective == 0.75
    assert last.runs == last.reused == {"train": train, "evaluate": evaluate}
    assert last.scalars == {"train/loss": 0.125, "evaluate/acc_val": 0.75}
    assert (last.scheduler_metric, last.scheduler_time) == (0.75, 1)
    # As from a poll of a new run: one result, as of the run's last value.
    losses = [r.scalars["train/loss"] for r in results if "train/loss" in r.scalars]
    assert set(losses) == {0.125}
    assert (results[0].step, results[0].scalars) == ("train", {})  # as it starts


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_objective_fails_the_trial_and_is_never_reported(tmp_path, bad):
    """A NaN objective was reported to Ray, ranked best (it compares false with
    everything), and the trial completed (issue 18)."""
    train = _step_run(tmp_path, "t" * 32, "train", {"lr": 0.01})
    evaluate = _step_run(
        tmp_path,
        "e" * 32,
        "evaluate",
        {PIN: train},
        scalars=[("acc_val", 0.5, 0), ("acc_val", bad, 1)],
    )
    workspace = Workspace(str(tmp_path / "project"), str(tmp_path))
    trial = Trial(PLAN, {}, workspace, launcher=None, tags=TAGS)
    trial.offered = {"train": [train], "evaluate": [evaluate]}

    results = []
    with pytest.raises(TrialFailed) as failed:
        while not trial.ended:
            results.append(trial.next_result())

    assert str(failed.value) == (
        f"step evaluate (run eeeeeeee) recorded {bad} for objective 'acc_val': "
        "it must be a finite number"
    )
    reported = [r.to_ray() for r in results]
    assert all(OBJECTIVE not in r for r in reported), reported


def test_a_killed_tunes_trial_with_a_nan_objective_closes_failed(tmp_path):
    """A trial whose steps completed while the tune was down: its objective
    decides, and a NaN one fails it."""
    train = _step_run(tmp_path, "t" * 32, "train", {"lr": 0.01})
    evaluate = _step_run(
        tmp_path, "e" * 32, "evaluate", {PIN: train}, scalars=[("acc_val", NAN, 0)]
    )
    outcome = TrialOutcome(1, {"lr": 0.01})
    outcome.runs = {"train": train, "evaluate": evaluate}

    _close_killed(outcome, PLAN, str(tmp_path))

    assert (outcome.status, outcome.objective) == ("failed", None)
    assert outcome.error == (
        "step evaluate (run eeeeeeee) recorded nan for objective 'acc_val': "
        "it must be a finite number"
    )
