"""What a tune leaves in Guild, from trial outcomes made here: the trial record
runs, trials.csv/json and the tune run's scalars, the learning curves and the
report (the tune tests check them on real tunes, end to end)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import check_report
from guild import run as guild_run
from guild.opref import OpRef
from guild.summary import SummaryWriter

from gpkg_ray.results.curves import learning_curves
from gpkg_ray.results.records import TrialRecords, record_scalars
from gpkg_ray.results.report import TuneRun, write_report
from gpkg_ray.results.trials import (
    best_trial,
    log_tune_scalars,
    no_objective_reason,
    ranked_trials,
    write_trials,
)
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.scalars import scalar_series
from gpkg_ray.tuning_spec import (
    Choice,
    Fixed,
    Objective,
    Param,
    Range,
    Settings,
    Step,
    TrialPlan,
    TuneSpec,
    flag_name,
)

OBJECTIVE = Objective("acc_val", "max", "evaluate")
LOSS = Objective("loss", "min", "train")
TAG = "tune-1234abcd"
TUNE = TuneRun("1234abcd" + "0" * 24, seed=7)


@pytest.fixture
def guild_home(tmp_path: Path) -> Path:
    home = tmp_path / "guild-home"
    (home / "runs").mkdir(parents=True)
    return home


def _outcome(number: int, status: str = "running", objective=None, **fields):
    outcome = TrialOutcome(
        number, {"lr": 0.01 * number, "batch-size": 32, "train:epochs": 3}
    )
    outcome.status, outcome.objective = status, objective
    for name, value in fields.items():
        setattr(outcome, name, value)
    return outcome


def _run(guild_home: Path, run_id: str) -> guild_run.Run:
    return guild_run.Run(run_id, str(guild_home / "runs" / run_id))


def _step_run(
    guild_home: Path, run_id: str, scalars=(), files=("model.json",)
) -> guild_run.Run:
    """A step run as Guild leaves it: its dir, a file, and the output scalars
    it logged, as (tag, value, step) (Guild's writer: 32-bit values)."""
    run = _run(guild_home, run_id)
    run.init_skel()
    # An opref, as every run Guild makes has: what Guild tells a run by.
    run.write_opref(OpRef("guildfile", str(guild_home / "guild.yml"), "", "", "op"))
    for name in files:
        Path(run.dir, name).write_text("{}")
    with SummaryWriter(run.guild_path()) as writer:
        for tag, value, step in scalars:
            writer.add_scalar(tag, value, step)
    return run


def _step_links(record: guild_run.Run) -> dict[str, list[str]]:
    """Each step folder of a record, and where its links point."""
    return {
        name: sorted(
            os.readlink(os.path.join(record.dir, name, entry))
            for entry in os.listdir(os.path.join(record.dir, name))
        )
        for name in os.listdir(record.dir)
        if name != ".guild"
    }


def _guild_scalars(guild_home: Path, run: guild_run.Run) -> dict[str, float]:
    """The run's scalars as `guild runs info` lists them and `guild compare`
    shows them: Guild's run index, by Guild's key (`PREFIX#TAG`, or the tag
    for the run's own), each with its last value."""
    from guild import index
    from guild.run_util import run_scalar_key

    runs_index = index.RunIndex(str(guild_home / "cache"))
    runs_index.refresh([run], ["scalar"])
    return {run_scalar_key(s): s["last_val"] for s in runs_index.run_scalars(run)}


# Trial records


def test_a_started_trial_is_a_running_trial_run_with_its_values(guild_home):
    records = TrialRecords(str(guild_home), OBJECTIVE, [TAG])
    outcome = _outcome(1, runs={"train": "a" * 32})

    records.trial_started(outcome)

    record = _run(guild_home, outcome.record)
    assert record.opref.op_name == "trial"
    assert (record.opref.pkg_type, record.opref.pkg_name) == ("package", "gpkg.ray")
    assert record.status == "running"  # its LOCK holds this process's pid
    assert record.get("flags") == outcome.values
    assert record.get("tags") == [TAG]
    assert record.get("label") == f"{TAG} batch-size=32 lr=0.01 train:epochs=3"
    # Its step run named before Guild has created it; its files once it has.
    assert record.get("step_runs") == {"train": "a" * 32}
    assert _step_links(record) == {"train": []}
    _step_run(guild_home, "a" * 32, files=["model.json", "train.py"])

    outcome.runs["evaluate"] = "b" * 32
    records.trial_updated(outcome)
    assert record.get("step_runs") == {"train": "a" * 32, "evaluate": "b" * 32}
    assert _step_links(record) == {
        "train": [f"../../{'a' * 32}/model.json", f"../../{'a' * 32}/train.py"],
        "evaluate": [],
    }


@pytest.mark.parametrize(
    ("status", "guild_status", "exit_status"),
    [
        ("completed", "completed", 0),
        ("failed", "error", 1),
        ("stopped", "terminated", -15),
    ],
)
def test_an_ended_trial_has_its_status_objective_and_output(
    guild_home, status, guild_status, exit_status
):
    records = TrialRecords(str(guild_home), OBJECTIVE, [TAG])
    outcome = _outcome(2, runs={"train": "a" * 32, "evaluate": "b" * 32})
    records.trial_started(outcome)
    outcome.status, outcome.objective = status, 0.75
    outcome.metrics = {"train/loss": 0.5}
    if status == "failed":
        outcome.objective, outcome.error = None, "step evaluate failed"
    if status == "stopped":
        outcome.stop_reason = "stopped early by asha at step 1"

    records.trial_ended(outcome)

    record = _run(guild_home, outcome.record)
    assert record.status == guild_status
    assert record.get("exit_status") == exit_status
    assert record.get("stopped")
    assert not os.path.exists(record.guild_path("LOCK"))
    output = Path(record.guild_path("output")).read_text().splitlines()
    assert output[:3] == [
        f"trial 2: {status}",
        f"train run: {'a' * 32}",
        f"evaluate run: {'b' * 32}",
    ]
    assert "train/loss: 0.5" in output
    objective = [s.value for s in scalar_series(record.dir, "acc_val")]
    if status == "failed":
        assert objective == [] and output[-1] == "error: step evaluate failed"
    else:
        assert objective == [0.75] and "objective: 0.75" in output
    if status == "stopped":
        assert "stopped: stopped early by asha at step 1" in output


def test_a_trials_next_attempt_reopens_its_record_and_links_earlier_runs(guild_home):
    records = TrialRecords(str(guild_home), OBJECTIVE, [TAG])
    outcome = _outcome(3, runs={"train": "a" * 32})
    _step_run(guild_home, "a" * 32)
    records.trial_started(outcome)
    outcome.status, outcome.error = "failed", "train crashed"
    records.trial_ended(outcome)
    # A second failed attempt whose run a kill cut before Guild created it.
    outcome.restart("attempt 1 failed: train crashed")
    outcome.runs = {"train": "c" * 32}
    records.trial_started(outcome)
    outcome.restart("the tune was killed")

    outcome.runs = {"train": "d" * 32}
    records.trial_started(outcome)

    record = _run(guild_home, outcome.record)
    assert record.status == "running"
    assert record.get("exit_status") is None
    assert record.get("step_runs") == {"train": "d" * 32, "train~1": "a" * 32}
    # train's folder links the files of this attempt's run, once it has some.
    assert _step_links(record) == {
        "train": [],
        "train~1": [f"../../{'a' * 32}/model.json"],
    }
    outcome.status, outcome.objective = "completed", 0.5
    records.trial_ended(outcome)
    output = Path(record.guild_path("output")).read_text()
    assert "attempt 3: the tune was killed" in output
    assert f"train run of an earlier attempt: {'a' * 32}" in output


def test_restore_writes_an_ended_trials_record_once(guild_home):
    records = TrialRecords(str(guild_home), OBJECTIVE, [TAG])
    outcome = _outcome(4, "completed", 0.9, runs={"train": "a" * 32})

    records.restore(outcome)

    record = _run(guild_home, outcome.record)
    assert record.status == "completed"
    assert record.get("flags") == outcome.values
    assert [s.value for s in scalar_series(record.dir, "acc_val")] == [0.9]
    stopped = record.get("stopped")
    records.restore(outcome)  # as it ended already: left alone
    assert record.get("stopped") == stopped


def test_record_scalars_are_each_steps_last_values_by_plain_name(guild_home):
    """`guild runs info` and `guild compare` show a record's scalars by the
    names the steps logged, with the values they logged: not the step runs'
    own through a link (`evaluate/.guild#test_acc`), not 32-bit noise
    (0.9638890027999878)."""
    objective = Objective("test_acc", "max", "evaluate")
    records = TrialRecords(str(guild_home), objective, [TAG])
    train, evaluate = "a" * 32, "b" * 32
    outcome = _outcome(5, runs={"train": train, "evaluate": evaluate})
    records.trial_started(outcome)
    # What the steps logged, as Guild stored it (32 bits) ...
    _step_run(guild_home, train, [("loss", 0.25, 3), ("acc", 0.9513, 3)])
    _step_run(guild_home, evaluate, [("test_acc", 0.963889, 0), ("loss", 0.1, 0)])
    # ... and as the trial read it back.
    outcome.status, outcome.objective = "completed", 0.963889
    outcome.metrics = {
        "train/loss": 0.25,
        "train/acc": 0.9513,
        "evaluate/test_acc": 0.963889,
        "evaluate/loss": 0.1,
    }

    records.trial_ended(outcome)

    record = _run(guild_home, outcome.record)
    assert _guild_scalars(guild_home, record) == {
        "test_acc": 0.963889,
        "acc": 0.9513,
        "train/loss": 0.25,  # logged by two steps
        "evaluate/loss": 0.1,
    }
    # The step runs' files are still listed under the record.
    assert _step_links(record)["evaluate"] == [f"../../{evaluate}/model.json"]


def test_record_scalars_name_the_objective_plainly_and_others_by_step():
    objective = Objective("acc", "max", "evaluate")
    outcome = _outcome(1, "completed", 0.75)
    outcome.metrics = {"train/acc": 0.5, "evaluate/acc": 0.75, "train/lr": 0.01}
    assert record_scalars(outcome, objective) == {
        "acc": 0.75,
        "train/acc": 0.5,
        "lr": 0.01,
    }
    # A trial stopped at a limit: the objective is the penalty.
    penalized = _outcome(2, "stopped", -1.0, penalized=True)
    penalized.metrics = {"evaluate/acc": 0.5}
    assert record_scalars(penalized, objective) == {"acc": -1.0}
    assert record_scalars(_outcome(3, "failed"), objective) == {}


def test_a_retried_trials_record_has_only_the_last_attempts_scalars(guild_home):
    records = TrialRecords(str(guild_home), OBJECTIVE, [TAG])
    outcome = _outcome(6, runs={"train": "a" * 32, "evaluate": "b" * 32})
    records.trial_started(outcome)
    outcome.status, outcome.error = "failed", "evaluate crashed"
    outcome.metrics = {"train/loss": 0.5, "evaluate/extra": 1.0}
    records.trial_ended(outcome)
    outcome.restart("attempt 1 failed: evaluate crashed")
    outcome.runs = {"train": "c" * 32}
    records.trial_started(outcome)
    outcome.status, outcome.error = "failed", "train crashed"
    outcome.metrics = {"train/loss": 0.75}

    records.trial_ended(outcome)

    record = _run(guild_home, outcome.record)
    assert _guild_scalars(guild_home, record) == {"loss": 0.75}


def test_tag_best_tags_the_best_trial_and_its_runs_and_marks_nothing(guild_home):
    """Guild resolves `operation:` dependencies to marked runs first, in every
    project: finding the best must not mark anything (issue 17 item 3)."""
    records = TrialRecords(str(guild_home), OBJECTIVE, [TAG])
    first = _outcome(1, "completed", 0.8, runs={"train": "a" * 32})
    second = _outcome(2, "completed", 0.9, runs={"train": "b" * 32})
    for outcome in (first, second):
        _step_run(guild_home, outcome.runs["train"]).write_attr("tags", [TAG])
        records.restore(outcome)

    records.tag_best(first, [first, second])
    records.tag_best(second, [first, second])  # a resumed tune's new best

    def runs(outcome):
        return [_run(guild_home, r) for r in (outcome.record, outcome.runs["train"])]

    best_tags = ["best", f"{TAG}-best"]
    for run in runs(first):
        assert run.get("tags") == [TAG]
    for run in runs(second):
        assert run.get("tags") == [TAG, *best_tags]
    for run in runs(first) + runs(second):
        assert run.get("marked") is None


# The tune run's trials table and scalars


def _ended_trials() -> list[TrialOutcome]:
    return [
        _outcome(1, "completed", 0.8, runs={"train": "a" * 32, "evaluate": "b" * 32}),
        _outcome(2, "stopped", 0.95, runs={"train": "c" * 32}, progress=1,
                 stop_reason="stopped early by asha at step 1"),
        _outcome(3, "completed", 0.9, runs={"train": "d" * 32, "evaluate": "e" * 32},
                 progress=3),
        _outcome(4, "failed", runs={"train": "f" * 32}, error="train crashed"),
    ]  # fmt: skip


def test_a_tune_fails_only_when_no_trial_gave_an_objective():
    penalized = _outcome(1, "stopped", 0.0, penalized=True, stop_reason="max-time")
    stopped_early = _outcome(2, "stopped", 0.7, stop_reason="stopped early by asha")
    no_value = _outcome(3, "stopped", stop_reason="stopped early by asha")
    failed = _outcome(4, "failed", error="train crashed")

    # Trials every one stopped at a limit, with its penalty, are results.
    assert no_objective_reason([penalized, failed], OBJECTIVE) is None
    assert no_objective_reason([stopped_early], OBJECTIVE) is None
    assert no_objective_reason([no_value, failed], OBJECTIVE) == (
        "no trial gave evaluate#acc_val: 1 failed, 1 stopped before it was recorded"
    )
    assert no_objective_reason([], OBJECTIVE) == "no trial ran"


def test_best_and_ranked_trials_are_completed_ones():
    outcomes = _ended_trials()
    assert best_trial(outcomes, OBJECTIVE).number == 3  # not the stopped 0.95
    assert [o.number for o in ranked_trials(outcomes, OBJECTIVE)] == [3, 1]
    minimize = Objective("acc_val", "min", "evaluate")
    assert [o.number for o in ranked_trials(outcomes, minimize)] == [1, 3]
    assert best_trial([_outcome(1, "failed")], OBJECTIVE) is None


def test_a_nan_objective_is_never_the_best_trial():
    """With `min`, a NaN compared false with every value and stayed the best
    (issue 18): it was trial 1 here, tagged best."""
    nan = float("nan")
    objectives = [nan, 0.5, 0.3, nan, 0.1]
    outcomes = [_outcome(n, "completed", v) for n, v in enumerate(objectives, 1)]
    minimize = Objective("acc_val", "min", "evaluate")

    assert best_trial(outcomes, minimize).number == 5
    assert [o.number for o in ranked_trials(outcomes, minimize)] == [5, 3, 2]
    assert best_trial(outcomes, OBJECTIVE).number == 2
    infinite = [_outcome(1, "completed", float("-inf")), _outcome(2, "completed", 1.0)]
    assert best_trial(infinite, minimize).number == 2
    only_nan = [_outcome(1, "completed", nan), _outcome(2, "failed")]
    assert best_trial(only_nan, minimize) is None
    assert no_objective_reason(only_nan, minimize) is not None


def test_trials_csv_and_json_have_a_row_per_trial(tmp_path):
    outcomes = _ended_trials()

    write_trials(str(tmp_path), outcomes, OBJECTIVE, {"seed": 7})

    with open(tmp_path / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "trial",
        "status",
        "acc_val",
        "batch-size",
        "lr",
        "train:epochs",
        "evaluate_run",
        "train_run",
        "progress",
        "stopped",
        "error",
    ]
    assert [(r["trial"], r["status"], r["acc_val"]) for r in rows] == [
        ("1", "completed", "0.8"),
        ("2", "stopped", "0.95"),
        ("3", "completed", "0.9"),
        ("4", "failed", ""),
    ]
    assert rows[1]["evaluate_run"] == "" and rows[1]["train_run"] == "c" * 32
    assert rows[1]["stopped"] == "stopped early by asha at step 1"
    assert (rows[2]["progress"], rows[3]["error"]) == ("3", "train crashed")
    data = json.loads((tmp_path / "trials.json").read_text())
    assert data["seed"] == 7
    assert data["objective"] == {"scalar": "acc_val", "mode": "max", "step": "evaluate"}
    assert [t["trial"] for t in data["trials"]] == [1, 2, 3, 4]
    # The journal's form of a trial: one JSON form, read back whole.
    first = data["trials"][0]
    assert first == json.loads(json.dumps(outcomes[0].to_json()))
    assert TrialOutcome.from_json(first) == outcomes[0]
    assert data["trials"][3]["error"] == "train crashed"


class _Unwritable:
    """A value that cannot be written: a write that fails midway (a kill, a
    full disk) in a test."""

    def __str__(self):
        raise OSError("No space left on device")


def _left_over(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_trials_files_are_replaced_whole_not_rewritten(tmp_path):
    """A restart writes trials.csv and trials.json again: a reader of the
    old ones kept reading whole files, and a write that fails midway leaves
    them as they were (they were rewritten in place, issue 18)."""
    write_trials(str(tmp_path), _ended_trials()[:2], OBJECTIVE, {"seed": 7})
    paths = [tmp_path / "trials.csv", tmp_path / "trials.json"]
    old = [p.read_bytes() for p in paths]
    readers = [open(p, "rb") for p in paths]  # noqa: SIM115 (held open)
    try:
        write_trials(str(tmp_path), _ended_trials(), OBJECTIVE, {"seed": 7})
        assert [r.read() for r in readers] == old
    finally:
        for reader in readers:
            reader.close()
    new = [p.read_bytes() for p in paths]
    assert new != old and b'"trial": 4' in new[1]

    broken = _ended_trials()
    broken[1].values["lr"] = _Unwritable()
    with pytest.raises(OSError, match="No space left"):
        write_trials(str(tmp_path), broken, OBJECTIVE, {"seed": 7})
    assert paths[0].read_bytes() == new[0]
    assert _left_over(tmp_path) == []


def test_the_report_page_is_replaced_whole_not_rewritten(guild_home, tmp_path):
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir()
    outcomes = _trials_with_runs(guild_home)
    write_trials(str(run_dir), outcomes, OBJECTIVE, {})
    first = write_report(str(run_dir), outcomes[:2], _spec(), str(guild_home), TUNE)
    page = Path(first)
    old = page.read_bytes()

    with open(page, "rb") as reader:
        write_report(str(run_dir), outcomes, _spec(), str(guild_home), TUNE)
        assert reader.read() == old

    assert b"4 trials: 2 completed" in page.read_bytes()
    assert _left_over(page.parent) == []
    check_report(run_dir, expect_curves=True)


def test_tune_run_scalars_are_the_best_objective_and_the_counts(tmp_path):
    (tmp_path / ".guild").mkdir()
    (tmp_path / ".guild" / "opref").touch()  # a run, as Guild's are

    log_tune_scalars(str(tmp_path), _ended_trials(), OBJECTIVE)

    def scalar(tag):
        return [s.value for s in scalar_series(str(tmp_path), tag)]

    assert scalar("acc_val") == [0.9]  # not 32-bit noise: 0.8999999761581421
    assert scalar("trials_completed") == [2]
    assert scalar("trials_stopped") == [1]
    assert scalar("trials_failed") == [1]


# Learning curves and the report


def _spec(scheduler_metric: Objective = LOSS) -> TuneSpec:
    steps = (Step("train", "train"), Step("evaluate", "evaluate"))
    params = (
        Param("lr", Range(1e-3, 1e-1, log=True), (("train", "lr"),)),
        Param("batch-size", Choice((16, 32, 64)), (("train", "batch-size"),)),
        Param("train:epochs", Fixed(3), (("train", "epochs"),)),
    )
    return TuneSpec(TrialPlan(steps, params, OBJECTIVE, scheduler_metric), Settings())


def _trials_with_runs(guild_home: Path) -> list[TrialOutcome]:
    """Ended trials whose train runs logged `loss` each epoch (without `step:`
    lines in the stopped one) and whose evaluate runs logged acc_val once."""
    outcomes = _ended_trials()
    losses = {
        "a" * 32: [(0.75, 0), (0.5, 1), (0.25, 2)],
        "c" * 32: [(0.875, 0)],
        "d" * 32: [(0.5, 0), (0.25, 1), (0.125, 2)],
        "f" * 32: [],
    }
    for run_id, values in losses.items():
        _step_run(guild_home, run_id, [("loss", v, s) for v, s in values])
    # (values exact in float32, as event files store them)
    for run_id, acc in (("b" * 32, 0.75), ("e" * 32, 0.875)):
        _step_run(guild_home, run_id, [("acc_val", acc, 0)])
    return outcomes


def test_learning_curves_read_each_trials_step_run(guild_home):
    outcomes = _trials_with_runs(guild_home)

    curves = learning_curves(outcomes, LOSS, str(guild_home))

    # A run that logged no value makes no curve; time counts from 1.
    assert [c.trial.number for c in curves] == [1, 2, 3]
    assert curves[0].points == [(1, 0.75), (2, 0.5), (3, 0.25)]
    assert curves[1].points == [(1, 0.875)]
    evaluate = learning_curves(outcomes, OBJECTIVE, str(guild_home))
    assert [(c.trial.number, c.points) for c in evaluate] == [
        (1, [(1, 0.75)]),
        (3, [(1, 0.875)]),
    ]


def test_report_shows_plots_and_every_trial_best_first(guild_home, tmp_path):
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir()
    outcomes = _trials_with_runs(guild_home)
    write_trials(str(run_dir), outcomes, OBJECTIVE, {})

    page = write_report(str(run_dir), outcomes, _spec(), str(guild_home), TUNE)

    assert page == str(run_dir / "report" / "index.html")
    check_report(run_dir, expect_curves=True)
    html = Path(page).read_text()
    assert "<title>Tune: max evaluate#acc_val</title>" in html
    assert "4 trials: 2 completed, 1 stopped, 1 failed" in html
    trials_table = html[: html.index("</table>")]
    headers = re.findall(r"<th>([^<]*)</th>", trials_table)
    assert headers == ["trial", "status", "acc_val", "lr", "batch-size", "runs", "note"]
    rows = [
        re.findall(r"<td>([^<]*)</td>", row)
        for row in re.findall(r"<tr>(<td>.*?)</tr>", html)
    ]
    assert [row[:3] for row in rows] == [
        ["3", "completed", "0.9"],
        ["1", "completed", "0.8"],
        ["2", "stopped", "0.95"],
        ["4", "failed", ""],
    ]
    assert rows[0][5] == f"train {'d' * 8} evaluate {'e' * 8}"
    assert rows[2][6] == "stopped early by asha at step 1"
    assert rows[3][6] == "train crashed"
    assert "No learning curves" not in html


def test_report_without_curves_says_how_to_get_them(guild_home, tmp_path):
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir()
    outcomes = _trials_with_runs(guild_home)
    write_trials(str(run_dir), outcomes, OBJECTIVE, {})

    write_report(str(run_dir), outcomes, _spec(OBJECTIVE), str(guild_home), TUNE)

    check_report(run_dir, expect_curves=False)
    html = (run_dir / "report" / "index.html").read_text()
    assert (
        "No learning curves: the watched metric (max evaluate#acc_val) has one "
        "value per trial. Set <code>scheduler-metric</code>"
    ) in html


def test_report_names_the_tune_run_its_seed_and_settings(guild_home, tmp_path):
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir()
    outcomes = _trials_with_runs(guild_home)
    write_trials(str(run_dir), outcomes, OBJECTIVE, {})
    spec = TuneSpec(_spec().plan, Settings(max_trials=4, scheduler="asha"))
    tune = TuneRun("1234abcd" + "0" * 24, seed=1365068043, attempts=2)

    write_report(str(run_dir), outcomes, spec, str(guild_home), tune)

    html = (run_dir / "report" / "index.html").read_text()
    assert (
        f"Tune run <code>{tune.run_id}</code>, seed 1365068043, 2 attempts "
        "(<code>guild runs info 1234abcd</code>)"
    ) in html
    settings = dict(re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", html))
    assert settings["steps"] == "train, evaluate"
    assert settings["optimize"] == "max evaluate#acc_val"
    assert settings["scheduler-metric"] == "min train#loss"
    assert settings["space: lr"] == "loguniform[0.001:0.1]"
    assert settings["space: train:epochs"] == "3 (every trial)"
    # Every flag of the tune op, as Guild shows it.
    assert settings["max-trials"] == "4"
    assert settings["scheduler"] == "asha"
    assert settings["seed"] == "random"  # the flag was blank: the seed drawn above
    assert settings["cpus"] == "1"
    assert settings["limit-penalty"] == "fail"
    assert {name for name in settings if not name.startswith("space: ")} >= {
        flag_name(f.name) for f in fields(Settings)
    }


def test_report_copied_alone_keeps_every_link(guild_home, tmp_path):
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir()
    outcomes = _trials_with_runs(guild_home)
    write_trials(str(run_dir), outcomes, OBJECTIVE, {})
    write_report(str(run_dir), outcomes, _spec(), str(guild_home), TUNE)
    copy = tmp_path / "elsewhere" / "report"
    shutil.copytree(run_dir / "report", copy)
    shutil.rmtree(run_dir)

    html = (copy / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert set(links) == {
        "objective.png",
        "params.png",
        "curves.png",
        "parallel.png",  # 2 trials completed: no importance, no map
        "trials.csv",
    }
    assert all((copy / link).is_file() for link in links)
    with open(copy / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == len(outcomes)
