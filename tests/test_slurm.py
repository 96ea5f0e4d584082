"""A `ray-cluster` remote on a SLURM allocation (`slurm:` key): `guild remote
start|status|stop` and tunes on it, against a real one-node SLURM (munged,
slurmctld, slurmd from Debian's packages) that this module configures and
runs on this machine (tests/slurm.py), on 127.0.0.1 only. Root only.

One SLURM and two remotes for the module: `hpc` (no time limit) for start,
status, a tune and stop; `short` (a one-minute limit, SLURM's smallest, and
`stop-before: 30`) for a tune that its job's coming time limit stops, and a
status after the limit.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import slurm as local_slurm
import yaml
from conftest import error_lines
from projects import tune_config, write_project

pytestmark = pytest.mark.e2e

SKIP = local_slurm.missing_reason()


@pytest.fixture(scope="module")
def slurm_cluster(new_project):
    """The module's SLURM, a project with the two remotes, and the output of
    starting `hpc`; everything is stopped at the end (by handle), and checked
    gone."""
    if SKIP:
        pytest.skip(SKIP)
    slurm = local_slurm.LocalSlurm(cpus=2)
    slurm.start()
    project = new_project()
    project.env.update(slurm.env)
    hold = project.path.parent / "never"  # a train of `short` holds till the end
    write_project(project, tune_config(f"lr: [0.01, 0.02]\ntrain:hold: {hold}\n"))
    remotes = {
        "hpc": {"nodes": 1, "cpus-per-node": 1, "port": local_slurm.free_port()},
        "short": {
            "nodes": 1,
            "cpus-per-node": 1,
            "port": local_slurm.free_port(),
            "time": "1:00",
            "stop-before": 30,
        },
    }
    config = {
        "remotes": {
            name: {"type": "ray-cluster", "slurm": spec, "trial-cpus": 1}
            for name, spec in remotes.items()
        }
    }
    (project.path / "guild-config.yml").write_text(yaml.safe_dump(config))
    started = {}
    try:
        started["hpc"] = project.guild("remote", "start", "-y", "hpc", timeout=120)
        yield project, slurm, started
    finally:
        for name in remotes:
            project.guild("remote", "stop", "-y", name, timeout=120)
        slurm.stop()
    # A job step's slurmstepd exits on its own a moment after its job ends.
    deadline = time.monotonic() + 15
    while (left := _slurm_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], "left running"
    assert not slurm.dir.exists()


def _slurm_processes() -> list[str]:
    """SLURM's daemons and the job's Ray processes still running."""
    return [
        p.info["name"]
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] in ("slurmctld", "slurmd", "slurmstepd", "munged")
        or "gpkg-ray-slurm-" in " ".join(p.info["cmdline"] or [])
    ]


def _job_id(started: subprocess.CompletedProcess) -> str:
    first = started.stdout.splitlines()[0]
    assert first.startswith("hpc: submitted SLURM job ") or first.startswith(
        "short: submitted SLURM job "
    ), started.stdout + started.stderr
    return first.rsplit(" ", 1)[1]


def test_start_submits_the_job_and_waits_until_ray_is_up(slurm_cluster):
    project, slurm, started = slurm_cluster
    hpc = started["hpc"]
    assert hpc.returncode == 0, hpc.stdout + hpc.stderr
    job = _job_id(hpc)
    port = yaml.safe_load((project.path / "guild-config.yml").read_text())["remotes"][
        "hpc"
    ]["slurm"]["port"]
    lines = hpc.stdout.splitlines()
    assert f"hpc: Ray up at 127.0.0.1:{port}, 1/1 nodes" in lines
    assert lines[-1].startswith(
        f"hpc: Ray cluster started at 127.0.0.1:{port} in SLURM job {job} (1 node, "
        "token auth, time left "
    )
    assert lines[-1].endswith("stop it with `guild remote stop hpc`")
    token_file = project.home / ".guild" / "ray-clusters" / "hpc.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    # The token is on no command line, of the job's processes or any other.
    assert not [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if token in " ".join(p.info["cmdline"] or [])
    ]
    squeue = slurm.run("squeue", "-h", "-j", job, "-o", "%T %j")
    assert squeue.stdout.split() == ["RUNNING", "gpkg-ray-hpc"]


def test_status_shows_the_job_and_its_nodes(slurm_cluster):
    project, slurm, started = slurm_cluster
    job = _job_id(started["hpc"])

    status = project.guild("remote", "status", "hpc")

    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(
        f"hpc: SLURM job {job} running on {slurm.node}, time left "
    )
    assert lines[1].startswith("hpc: Ray cluster at 127.0.0.1:")
    assert lines[1].endswith("1 node up, 1/1 CPUs free")
    assert lines[3].split()[1:] == ["127.0.0.1", "idle", "1", "1", "0", "0", "head"]


def test_a_tune_runs_on_the_allocation_and_its_runs_come_home(slurm_cluster):
    project, _slurm, _started = slurm_cluster
    # Its trains do not hold: the hold file of the space is made.
    (project.path.parent / "never").touch()
    try:
        tuned = project.tune("cluster=hpc", "max-trials=2")
    finally:
        os.remove(project.path.parent / "never")

    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert "2 trials on cluster=hpc" in tuned.stdout
    trains = project.runs_of("train")
    assert len(trains) == 2
    for run in trains:
        assert run.status == "completed"
        assert run.get("ray_node"), "a run of a node, come home"
        assert Path(run.dir, "model.json").exists()


def test_stop_cancels_the_job_and_ends_what_it_started(slurm_cluster):
    project, slurm, started = slurm_cluster
    job = _job_id(started["hpc"])
    state_dir = project.home / ".guild" / "ray-clusters"

    stopped = project.guild("remote", "stop", "-y", "hpc")
    status = project.guild("remote", "status", "hpc")

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stopped.stdout.strip() == f"hpc: SLURM job {job} cancelled"
    squeue = slurm.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%T")
    assert squeue.stdout.strip() == "CANCELLED"
    assert not (state_dir / "hpc.json").exists()
    assert not (state_dir / "hpc.token").exists()
    assert not Path(f"/tmp/gpkg-ray-slurm-{job}").exists()
    assert error_lines(status) == [
        "guild: remote hpc is not available (no SLURM job: start one with "
        "`guild remote start hpc`)"
    ]


def test_a_job_near_its_time_limit_stops_the_tune_on_it_and_status_says_so(
    slurm_cluster,
):
    project, _slurm, _started = slurm_cluster
    started = project.guild("remote", "start", "-y", "short", timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    job = _job_id(started)

    # Its trains hold until the tune stops them, 30 s before the limit.
    tuned = project.tune("cluster=short", "max-trials=2", "max-concurrent=1")
    # SLURM ends a job within 30 s after its limit (slurmctld's check period).
    deadline = time.monotonic() + 120
    status = project.guild("remote", "status", "short")
    while "TIMEOUT" not in status.stderr and time.monotonic() < deadline:
        time.sleep(3)
        status = project.guild("remote", "status", "short")

    assert tuned.returncode != 0
    tune_run = max(project.runs_of("tune"), key=lambda r: r.get("started"))
    reason = re.compile(
        rf"SLURM job {job} is \d+ s from its time limit \(1:00\); stop-before "
        "is 30 s"
    )
    message = re.search(rf"gpkg.ray: ({reason.pattern}): (.*)", tuned.stderr)
    assert message, tuned.stdout + tuned.stderr
    assert message.group(2) == (
        "its running trials were stopped; once a new allocation is up (`guild "
        f"remote start short`), continue with `guild run --restart {tune_run.id}`"
    )
    stopped = [t for t in project.trials(tune_run) if t["status"] == "stopped"]
    assert stopped, project.trials(tune_run)
    assert all(t["stop_reason"] == message.group(1) for t in stopped)
    assert "running" not in project.statuses("train").values()
    assert error_lines(status) == [
        f"guild: remote short is not available (SLURM job {job} ended: TIMEOUT, it "
        "reached its time limit (1:00): start a new allocation with `guild remote "
        "start short`)"
    ]
    assert not Path(f"/tmp/gpkg-ray-slurm-{job}").exists()


def test_the_stopped_tune_resumes_with_restart_on_a_new_allocation(slurm_cluster):
    """After the time limit (the test before): a new allocation of the same
    remote, here with a longer limit, and `guild run --restart` runs what the
    stopped attempt left."""
    project, _slurm, _started = slurm_cluster
    tune_run = max(project.runs_of("tune"), key=lambda r: r.get("started"))
    left = [t for t in project.trials(tune_run) if t["status"] != "completed"]
    assert left, "the test before left trials to run"
    config_path = project.path / "guild-config.yml"
    config = yaml.safe_load(config_path.read_text())
    config["remotes"]["short"]["slurm"]["time"] = "10:00"
    config_path.write_text(yaml.safe_dump(config))
    started = project.guild("remote", "start", "-y", "short", timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    (project.path.parent / "never").touch()  # its trains no longer hold
    try:
        restarted = project.watch_restart(tune_run.id)
    finally:
        os.remove(project.path.parent / "never")

    assert restarted.returncode == 0, restarted.output
    trials = project.trials(project.run(tune_run.id))
    assert [t["status"] for t in trials] == ["completed", "completed"], trials
    assert all(project.run(t["runs"]["train"]).get("ray_node") for t in trials)
