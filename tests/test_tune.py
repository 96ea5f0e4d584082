"""`guild run tune` end to end: the real guild CLI, a real embedded Ray."""

from __future__ import annotations

import csv
import glob
import io
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Project, Watched, still_running
from projects import tune_config, write_project

pytestmark = pytest.mark.e2e  # real `guild` runs and Ray

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address in LOOPBACK or address == ipaddress.ip_address("::1")


@dataclass
class MainTune:
    """A tune of 4 random trials on the embedded Ray, and what it left."""

    project: Project
    watched: Watched
    left_running: list[str]
    new_temp_dirs: set[str]

    @property
    def run(self):
        return self.project.tune_run()

    def trial_rows(self) -> list[dict[str, str]]:
        rows = self.project.compare()
        return [row for row in rows if row["operation"] == "gpkg.ray/trial"]


@pytest.fixture(scope="module")
def main_tune(new_project) -> Iterator[MainTune]:
    project = new_project()
    write_project(
        project,
        tune_config(
            """
            lr: loguniform[1e-3:1e-1]
            batch-size: [16, 32, 64]
            train:sleep: 0.5
            """
        ),
    )
    # A temp dir of the tune's own (short: Ray puts sockets in it), so that what
    # it leaves there is told apart from what other processes leave in /tmp.
    temp_dir = tempfile.mkdtemp(prefix="gt-")
    project.env["TMPDIR"] = temp_dir
    try:
        watched = project.watch_tune("max-trials=4", "seed=7", sockets=True)

        # What the tune left, seen as it ends.
        yield MainTune(
            project,
            watched,
            still_running(watched.processes),
            set(glob.glob(os.path.join(temp_dir, "gpkg-ray-*"))),
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_trials_run_as_guild_runs_on_embedded_ray(main_tune):
    assert main_tune.watched.returncode == 0, main_tune.watched.output
    assert "Traceback" not in main_tune.watched.output


def test_one_compare_row_per_trial_with_its_values_and_objective(main_tune):
    project = main_tune.project
    rows = main_tune.trial_rows()
    assert len(rows) == 4
    assert sorted(r["run"] for r in project.compare("-Fo", "trial")) == sorted(
        r["run"] for r in rows
    )
    for row in rows:
        assert row["status"] == "completed"
        assert 1e-3 <= float(row["lr"]) <= 1e-1
        assert row["batch-size"] in {"16", "32", "64"}
        assert abs(float(row["acc_val"]) - (1 - float(row["lr"]))) < 1e-5


def test_each_trial_ran_train_then_evaluate_on_its_own_train_run(main_tune):
    project = main_tune.project
    tag = f"tune-{main_tune.run.short_id}"
    records = project.runs_of("trial")
    assert len(records) == 4
    train_ids, evaluate_ids = set(), set()
    for record in records:
        assert tag in record.get("tags")
        links = project.record_links(record)
        assert set(links) == {"train", "evaluate"}
        train, evaluate = project.run(links["train"]), project.run(links["evaluate"])
        assert train.opref.op_name == "train" and evaluate.opref.op_name == "evaluate"
        assert train.status == evaluate.status == "completed"
        assert train.get("flags")["lr"] == record.get("flags")["lr"]
        assert evaluate.get("flags")["operation:train"] == train.id
        (dep,) = evaluate.get("deps")["operation:train"].values()
        assert dep["config"] == train.id
        assert tag in train.get("tags") and tag in evaluate.get("tags")
        train_ids.add(train.id)
        evaluate_ids.add(evaluate.id)
    assert len(train_ids) == len(evaluate_ids) == 4
    assert {r.id for r in project.runs_of("train")} == train_ids
    assert {r.id for r in project.runs_of("evaluate")} == evaluate_ids


def test_the_best_trial_and_its_runs_are_tagged_and_no_run_is_marked(main_tune):
    """Guild resolves `operation:` dependencies to marked runs first, in every
    project: a tune marks nothing, and its best is found by a tag."""
    project = main_tune.project
    records = project.runs_of("trial")
    best = min(records, key=lambda r: r.get("flags")["lr"])  # acc_val = 1 - lr
    best_runs = {best.id, *project.record_links(best).values()}
    assert [r.id for r in map(project.run, project.run_ids()) if r.get("marked")] == []
    assert _listed(project, "-Fm") == set()
    tag = f"tune-{main_tune.run.short_id}"
    assert _listed(project, "-Ft", f"{tag}-best") == best_runs
    assert _listed(project, "-Ft", "best") == best_runs


def _listed(project: Project, *filters: str) -> set[str]:
    """The ids of the runs `guild select --all FILTERS` selects."""
    listed = project.guild("select", "--all", *filters)
    assert listed.returncode == 0, listed.stderr
    return set(listed.stdout.split())


def test_the_tune_run_records_its_scalars_and_a_table_of_all_trials(main_tune):
    project = main_tune.project
    rows = main_tune.trial_rows()
    (tune_row,) = project.compare(
        "-Fo", "tune", "-cc", "acc_val,trials_completed,trials_failed"
    )
    assert float(tune_row["acc_val"]) == max(float(r["acc_val"]) for r in rows)
    assert float(tune_row["trials_completed"]) == 4
    assert float(tune_row["trials_failed"]) == 0
    with open(os.path.join(main_tune.run.dir, "trials.csv")) as f:
        table = list(csv.DictReader(f))
    assert sorted(int(t["trial"]) for t in table) == [1, 2, 3, 4]
    assert {t["train_run"] for t in table} == {r.id for r in project.runs_of("train")}
    with open(os.path.join(main_tune.run.dir, "trials.json")) as f:
        assert json.load(f)["seed"] == 7


def test_scalars_reached_ray_while_train_ran(main_tune):
    """Train's loss in reports made while train ran, before evaluate started
    (values read in one poll make one report, as of the last)."""
    results = glob.glob(
        os.path.join(main_tune.run.dir, "ray", "search", "*", "result.json")
    )
    assert len(results) == 4
    for path in results:
        with open(path) as f:
            reports = [json.loads(line) for line in f]
        during_train = [
            r["train/loss"]
            for r in reports
            if r.get("trial_step") == "train" and "train/loss" in r
        ]
        assert during_train, (path, reports)
        assert during_train[-1] == reports[-1]["train/loss"]  # its last epoch's


def test_ray_listened_on_loopback_only_and_left_nothing_behind(main_tune):
    watched, project = main_tune.watched, main_tune.project
    assert watched.listeners, "no listening socket seen: the check saw no Ray"
    assert any(name == "gcs_server" for _, _, name in watched.listeners)
    remote = [entry for entry in watched.listeners if not _is_loopback(entry[0])]
    assert not remote, f"Ray listened beyond loopback: {remote}"
    assert main_tune.left_running == []
    assert not (project.home / ".ray").exists()
    assert not (project.home / "ray_results").exists()
    assert main_tune.new_temp_dirs == set()


def test_tensorboard_shows_each_trials_step_runs_and_no_copy_of_ray(main_tune):
    """What `guild tensorboard` shows of a tune (its scalars as Guild exports
    them): each trial's curves are its step runs' scalars, under Guild's names
    for them; the tune run holds no copy of them under Ray's trial ids, and
    what the tune writes itself has no `sys/*` values of Guild's plugins."""
    project, tune_run = main_tune.project, main_tune.run
    tag = f"tune-{tune_run.short_id}"

    result = project.guild("tensorboard", "-Ft", tag, "--export-scalars", "-")

    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    # A run's own scalars are in its .guild; a record's links to its step runs
    # (`train/.guild`) are followed by Guild's export. Nothing under ray/.
    assert not [row for row in rows if not row["path"].endswith(".guild")]
    assert not glob.glob(
        os.path.join(tune_run.dir, "ray", "**", "*tfevents*"), recursive=True
    )
    assert not [row for row in rows if row["tag"].startswith(("sys/", "ray/"))]
    tags = {}
    for row in rows:
        if row["path"] == ".guild":
            tags.setdefault(row["run"], set()).add(row["tag"])
    assert tags[tune_run.id] == {
        "acc_val",
        "trials_completed",
        "trials_failed",
        "trials_stopped",
    }
    for record in project.runs_of("trial"):
        assert tags[record.id] == {"acc_val", "loss"}  # the steps' last values
    trains = project.runs_of("train")
    assert len(trains) == 4
    for train in trains:
        losses = [r for r in rows if r["run"] == train.id and r["tag"] == "loss"]
        assert sorted(int(r["step"]) for r in losses) == [0, 1]  # its curve


# Last of the tests on the main tune: it removes the tune.
def test_one_command_removes_a_tune_and_all_its_runs(main_tune):
    project = main_tune.project
    tag = f"tune-{main_tune.run.short_id}"
    assert tag in main_tune.run.get("tags")

    removed = project.guild("runs", "rm", "-y", "-Ft", tag)

    assert removed.returncode == 0, removed.stderr
    assert _listed(project) == set()


@pytest.fixture(scope="module")
def custom_tpe_tune(new_project) -> tuple[Project, subprocess.CompletedProcess]:
    """A tune of the op whose objective comes from custom output scalars, with
    TPE, one trial at a time."""
    project = new_project()
    write_project(project)
    result = project.tune(
        "search=tpe", "max-trials=3", "seed=3", "max-concurrent=1", op="tune-custom"
    )
    return project, result


def test_objective_from_custom_output_scalars(custom_tpe_tune):
    project, result = custom_tpe_tune

    assert result.returncode == 0, result.stdout + result.stderr
    rows = project.compare("-Fo", "trial")
    assert len(rows) == 3
    for row in rows:
        assert abs(float(row["acc_val"]) - (1 - float(row["lr"]))) < 1e-5
    assert len(project.runs_of("evaluate-custom")) == 3


def test_tpe_search_with_a_seed(custom_tpe_tune):
    project, result = custom_tpe_tune

    assert result.returncode == 0, result.stdout + result.stderr
    rows = project.compare("-Fo", "trial")
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    assert "Search: tpe, seed 3" in result.stdout


def test_objective_from_tf_event_files_the_script_writes(project):
    write_project(project)

    result = project.tune("max-trials=2", op="tune-tb")

    assert result.returncode == 0, result.stdout + result.stderr
    records = project.runs_of("trial")
    assert len(records) == 2
    best_record = min(records, key=lambda r: r.get("flags")["lr"])
    assert "best" in best_record.get("tags")  # min loss_val = 2 * lr
    trials = project.trials(project.tune_run("tune-tb"))
    for trial in trials:
        assert abs(trial["objective"] - trial["values"]["lr"] * 2) < 1e-6


@pytest.fixture(scope="module")
def grid_with_failures(new_project) -> tuple[Project, subprocess.CompletedProcess]:
    """A grid search where some trials' steps fail: `crash` fails train,
    `silent` records no objective."""
    project = new_project()
    write_project(
        project,
        tune_config(
            """
            lr: [0.01, 0.02]
            mode: [ok, crash, silent]
            train:epochs: 1
            """
        ),
    )
    return project, project.tune("search=grid", "max-trials=6")


def test_a_failing_step_fails_only_its_trial(grid_with_failures):
    project, result = grid_with_failures

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    trials = project.trials()
    by_mode = {}
    for trial in trials:
        by_mode.setdefault(trial["values"]["mode"], []).append(trial)
    assert [t["status"] for t in by_mode["ok"]] == ["completed", "completed"]
    for trial in by_mode["crash"]:
        assert trial["status"] == "failed"
        train_id = trial["runs"]["train"]
        assert (
            f"step train (run {train_id[:8]}) failed with exit status 1"
            in trial["error"]
        )
        assert "train crashed on purpose" in trial["error"]
        assert "evaluate" not in trial["runs"]  # later steps do not run
        assert project.run(train_id).status == "error"
    for trial in by_mode["silent"]:
        assert trial["status"] == "failed"
        evaluate_id = trial["runs"]["evaluate"]
        assert (
            f"step evaluate (run {evaluate_id[:8]}) did not record scalar 'acc_val' "
            "(scalars found: acc)"
        ) in trial["error"]
    statuses = {r.get("flags")["mode"]: r.status for r in project.runs_of("trial")}
    assert statuses == {"ok": "completed", "crash": "error", "silent": "error"}
    assert "train crashed on purpose" in output
    assert "Traceback" not in result.stdout


def test_grid_search_runs_every_combination(grid_with_failures):
    project, result = grid_with_failures

    assert result.returncode == 0, result.stdout + result.stderr
    flags = sorted(
        (r.get("flags")["lr"], r.get("flags")["mode"]) for r in project.runs_of("train")
    )
    assert flags == [
        (lr, mode) for lr in (0.01, 0.02) for mode in ("crash", "ok", "silent")
    ]
    # A fixed value goes to every trial.
    assert {r.get("flags")["epochs"] for r in project.runs_of("train")} == {1}


def test_tune_fails_when_every_trial_fails(project):
    write_project(
        project,
        tune_config(
            """
            mode: [crash, silent]
            """
        ),
    )

    result = project.tune("search=grid")

    assert result.returncode != 0
    assert project.tune_run().status == "error"
    records = project.runs_of("trial")
    assert len(records) == 2 and all(r.status == "error" for r in records)
    assert "2 trials: 0 completed, 0 stopped, 2 failed" in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last == "gpkg.ray: no trial gave evaluate#acc_val: 2 failed, 0 stopped "
        "before it was recorded"
    )


def test_space_entries_from_the_command_line_reach_the_step_runs(project):
    """A list through the `space` flag, a fixed value of one step's flag in it,
    and a step flag forced with --force-flags: every train run gets them, the
    config file stays as it was, and Guild starts no batch (issue 17 item 5)."""
    write_project(project)  # lr: loguniform[..], batch-size: [16, 32, 64]
    config = (project.path / "guild.yml").read_bytes()

    result = project.tune(
        "max-trials=2",
        "space=lr=[0.01,0.02] train:epochs=3",
        "--force-flags",
        "batch-size=64",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    trains = project.runs_of("train")
    assert len(trains) == 2
    for train in trains:
        flags = train.get("flags")
        assert (flags["epochs"], flags["batch-size"]) == (3, 64)
        assert flags["lr"] in (0.01, 0.02)
        assert "step: 2" in project.output(train)  # it ran 3 epochs
    ops = {r.opref.op_name for r in map(project.run, project.run_ids())}
    assert ops == {"tune", "trial", "train", "evaluate"}
    assert project.tune_run().get("label") == (
        "max-trials=2 space: lr=[0.01,0.02] batch-size=64 train:epochs=3"
    )
    assert (project.path / "guild.yml").read_bytes() == config


# An objective that names a scalar no step logs (train logs loss). One step a
# trial: the failure is the same with more, each trial a run more to wait on.
MISNAMED_OBJECTIVE = """
steps: [train]
optimize:
  - min: losss
space:
  lr: loguniform[1e-3:1e-1]
  train:epochs: 1
"""


def test_a_misnamed_objective_stops_the_search_after_three_failures(project):
    """Fail fast: the first 3 trials fail the same way, so the search stops
    before max-trials ran, cleanly, with one last line; a restart once the
    config is fixed goes on with the trials left."""
    write_project(project, MISNAMED_OBJECTIVE)

    watched = project.watch_tune("max-trials=5", "max-concurrent=2", "seed=11")

    assert watched.returncode == 1, watched.output
    tune_run = project.tune_run()
    assert tune_run.status == "error"
    trials = project.trials()
    assert len(trials) < 5, watched.output  # stopped before max-trials ran
    failed = sorted(
        (t for t in trials if t["status"] == "failed"), key=lambda t: t["ended"]
    )
    # The fourth, running beside the third, may fail before the stop reaches it.
    assert len(failed) in (3, 4)
    first_train = failed[0]["runs"]["train"]
    # The tune's last line on stderr. Guild relays stderr and stdout (whose
    # last line is the report's) apart, so in the watched output, which has
    # both, the two may come in either order, even within a line.
    assert watched.output.rstrip().endswith(
        (
            "(scalars found: loss)",
            f"(guild open {tune_run.short_id} -p report/index.html)",
        )
    )
    assert (
        "gpkg.ray: tune stopped: the first 3 trials failed the same way: step "
        f"train (run {first_train[:8]}) did not record scalar 'losss' "
        "(scalars found: loss)"
    ) in watched.output
    for trial in trials:
        if trial["status"] != "failed":  # running when the search stopped
            assert trial["status"] == "stopped" and trial["interrupted"], trial
            assert trial["stop_reason"] == "the first 3 trials failed the same way"
    # Every run ended, each trial's record as its trial, and nothing runs on.
    assert "running" not in project.statuses().values()
    for trial in trials:
        expected = "error" if trial["status"] == "failed" else "terminated"
        assert project.record_of(trial).status == expected
    assert _journal_statuses(tune_run.dir) == {t["trial"]: t["status"] for t in trials}
    assert still_running(watched.processes) == []

    write_project(project, MISNAMED_OBJECTIVE.replace("losss", "loss"))
    restarted = project.watch_restart(tune_run.id)

    assert restarted.returncode == 0, restarted.output
    assert project.tune_run().status == "completed"
    trials = project.trials()
    assert len(trials) == 5
    statuses = [t["status"] for t in trials]
    assert statuses.count("failed") == len(failed)
    assert statuses.count("completed") == 5 - len(failed)
    assert still_running(restarted.processes) == []


def _journal_statuses(run_dir: str) -> dict[int, str]:
    """Trial number -> its last status in the tune run's journal."""
    statuses = {}
    with open(os.path.join(run_dir, "journal.jsonl")) as f:
        for line in f:
            entry = json.loads(line)
            if entry["event"] == "trial":
                statuses[entry["outcome"]["trial"]] = entry["outcome"]["status"]
    return statuses
