"""`guild run tune` end to end: the real guild CLI, a real embedded Ray."""

from __future__ import annotations

import csv
import glob
import ipaddress
import json
import os
import tempfile

import pytest
from conftest import still_running
from projects import tune_config, write_project

pytestmark = pytest.mark.e2e  # real `guild` runs and Ray

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address in LOOPBACK or address == ipaddress.ip_address("::1")


def _record_links(project, record):
    """Step name -> run id, from the links a trial record keeps to its runs."""
    return {
        name: os.path.basename(os.readlink(os.path.join(record.dir, name)))
        for name in os.listdir(record.dir)
        if os.path.islink(os.path.join(record.dir, name))
    }


def test_trials_run_as_guild_runs_on_embedded_ray(project):
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
    temp_dirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "gpkg-ray-*")))

    watched = project.watch_tune("max-trials=4", "seed=7")

    assert watched.returncode == 0, watched.output
    tune_run = project.tune_run()
    tag = f"tune-{tune_run.short_id}"

    # One compare row per trial, with its sampled flags and its objective.
    all_rows = project.compare()
    rows = [row for row in all_rows if row["operation"] == "gpkg.ray/trial"]
    assert len(rows) == 4
    assert sorted(r["run"] for r in project.compare("-Fo", "trial")) == sorted(
        r["run"] for r in rows
    )
    for row in rows:
        assert row["status"] == "completed"
        assert 1e-3 <= float(row["lr"]) <= 1e-1
        assert row["batch-size"] in {"16", "32", "64"}
        assert abs(float(row["acc_val"]) - (1 - float(row["lr"]))) < 1e-5

    # Each trial ran train then evaluate; evaluate used its own trial's train run.
    records = project.runs_of("trial")
    assert len(records) == 4
    train_ids, evaluate_ids = set(), set()
    for record in records:
        assert tag in record.get("tags")
        links = _record_links(project, record)
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

    # The best trial (and its runs) is marked, and only it.
    best = min(records, key=lambda r: r.get("flags")["lr"])  # acc_val = 1 - lr
    marked = [r for r in map(project.run, project.run_ids()) if r.get("marked")]
    assert {r.id for r in marked} == {best.id, *_record_links(project, best).values()}

    # The tune run records its own scalars and a table of all trials.
    (tune_row,) = project.compare(
        "-Fo", "tune", "-cc", "acc_val,trials_completed,trials_failed"
    )
    assert float(tune_row["acc_val"]) == max(float(r["acc_val"]) for r in rows)
    assert float(tune_row["trials_completed"]) == 4
    assert float(tune_row["trials_failed"]) == 0
    with open(os.path.join(tune_run.dir, "trials.csv")) as f:
        table = list(csv.DictReader(f))
    assert sorted(int(t["trial"]) for t in table) == [1, 2, 3, 4]
    assert {t["train_run"] for t in table} == train_ids
    with open(os.path.join(tune_run.dir, "trials.json")) as f:
        assert json.load(f)["seed"] == 7

    # Scalars reached Ray while train ran: each epoch's loss in its own report.
    results = glob.glob(os.path.join(tune_run.dir, "ray", "search", "*", "result.json"))
    assert len(results) == 4
    for path in results:
        with open(path) as f:
            reports = [json.loads(line) for line in f]
        losses = [r["train/loss"] for r in reports if "train/loss" in r]
        assert len(set(losses)) == 2, (path, losses)  # epochs 0 and 1

    # Ray listened on loopback only, and left nothing behind.
    assert watched.listeners, "no listening socket seen: the check saw no Ray"
    assert any(name == "gcs_server" for _, _, name in watched.listeners)
    remote = [entry for entry in watched.listeners if not _is_loopback(entry[0])]
    assert not remote, f"Ray listened beyond loopback: {remote}"
    assert not still_running(watched.processes)
    assert not (project.home / ".ray").exists()
    assert not (project.home / "ray_results").exists()
    temp_dirs_after = set(glob.glob(os.path.join(tempfile.gettempdir(), "gpkg-ray-*")))
    assert not temp_dirs_after - temp_dirs_before
    assert "Traceback" not in watched.output


def test_objective_from_custom_output_scalars(project):
    write_project(project)

    result = project.tune("max-trials=2", op="tune-custom")

    assert result.returncode == 0, result.stdout + result.stderr
    rows = project.compare("-Fo", "trial")
    assert len(rows) == 2
    for row in rows:
        assert abs(float(row["acc_val"]) - (1 - float(row["lr"]))) < 1e-5
    assert len(project.runs_of("evaluate-custom")) == 2


def test_objective_from_tf_event_files_the_script_writes(project):
    write_project(project)

    result = project.tune("max-trials=2", op="tune-tb")

    assert result.returncode == 0, result.stdout + result.stderr
    records = project.runs_of("trial")
    assert len(records) == 2
    best_record = min(records, key=lambda r: r.get("flags")["lr"])
    assert best_record.get("marked")  # min loss_val = 2 * lr
    with open(os.path.join(project.tune_run("tune-tb").dir, "trials.json")) as f:
        trials = json.load(f)["trials"]
    for trial in trials:
        assert abs(trial["objective"] - trial["values"]["lr"] * 2) < 1e-6


def test_a_failing_step_fails_only_its_trial(project):
    write_project(
        project,
        tune_config(
            """
            lr: [0.01, 0.02]
            mode: [ok, crash, silent]
            """
        ),
    )

    result = project.tune("search=grid", "max-trials=6")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    with open(os.path.join(project.tune_run().dir, "trials.json")) as f:
        trials = json.load(f)["trials"]
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


def test_grid_search_runs_every_combination(project):
    write_project(
        project,
        tune_config(
            """
            lr: [0.01, 0.05]
            batch-size: [16, 64]
            train:epochs: 1
            """
        ),
    )

    result = project.tune("search=grid")

    assert result.returncode == 0, result.stdout + result.stderr
    flags = sorted(
        (r.get("flags")["lr"], r.get("flags")["batch-size"])
        for r in project.runs_of("train")
    )
    assert flags == [(0.01, 16), (0.01, 64), (0.05, 16), (0.05, 64)]
    assert {r.get("flags")["epochs"] for r in project.runs_of("train")} == {1}


def test_tpe_search_with_a_seed(project):
    write_project(project)

    result = project.tune("search=tpe", "max-trials=3", "seed=3", "max-concurrent=1")

    assert result.returncode == 0, result.stdout + result.stderr
    rows = project.compare("-Fo", "trial")
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    assert "Search: tpe, seed 3" in result.stdout
