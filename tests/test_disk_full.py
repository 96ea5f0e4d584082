"""A disk that fills during a tune, end to end: the tune stops with one clear
line, its journal reads back whole, and `guild run --restart` once space is
freed finishes the search with exactly the trials asked for, none twice.

The Guild home is a small tmpfs (mounting one needs root, as in CI), filled
from outside once the tune has ended two trials.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest
from conftest import still_running
from projects import tune_config, write_project

pytestmark = [
    pytest.mark.e2e,  # real `guild` runs and Ray
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]

MAX_TRIALS = 3
HOME_SIZE = "48m"
SPACE = """
    lr: loguniform[1e-3:1e-1]
    train:epochs: 1
    """


@pytest.fixture
def small_home(project):
    """The project's Guild home on a tmpfs of HOME_SIZE; unmounted at the end,
    whatever happened."""
    home = project.env["GUILD_HOME"]
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={HOME_SIZE}", "tmpfs", home],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    yield home
    # Lazy: a process of a failed test may still have a file open there.
    subprocess.run(["umount", "--lazy", home], check=True)


def _fill(path: str) -> None:
    """Writes `path` until the file system is full."""
    chunk = b"\0" * (1024 * 1024)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]


def _journal_lines(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "journal.jsonl")) as f:
        return [json.loads(line) for line in f]  # every line whole


def _trials_ended(project) -> int:
    runs = project.runs_of("tune")
    if not runs or not os.path.exists(os.path.join(runs[0].dir, "journal.jsonl")):
        return 0
    ended = set()
    with open(os.path.join(runs[0].dir, "journal.jsonl")) as f:
        lines = f.readlines()
    for line in lines:
        try:
            outcome = json.loads(line).get("outcome", {})
        except json.JSONDecodeError:
            continue
        if outcome.get("status") not in (None, "running"):
            ended.add(outcome["trial"])
    return len(ended)


def test_a_full_disk_stops_the_tune_and_a_restart_finishes_it(project, small_home):
    write_project(project, tune_config(SPACE))
    filler = os.path.join(small_home, "filler")

    def fill_after_a_trial(proc) -> None:
        if not os.path.exists(filler) and _trials_ended(project) >= 1:
            _fill(filler)

    full = project.watch_tune(
        f"max-trials={MAX_TRIALS}",
        "max-concurrent=1",
        "search=random",
        "seed=5",
        during=fill_after_a_trial,
    )

    tail = full.output[-4000:]
    assert os.path.exists(filler), tail
    assert full.returncode != 0, tail
    errors = [line for line in full.output.splitlines() if "disk is full" in line]
    assert len(errors) == 1, tail
    assert errors[0].startswith("gpkg.ray: the disk is full (No space left"), tail
    assert f"`guild run --restart {project.tune_run().id}`" in errors[0]
    # No traceback of the tune's own (Guild's `guild run` around it, which
    # writes the tune's output and exit status, prints its own).
    assert "gpkg_ray" not in full.output.replace("gpkg_ray.tuner", ""), tail
    assert "Logging error" not in full.output, tail
    tune_run = project.tune_run()
    _journal_lines(tune_run.dir)
    assert still_running(full.processes) == []

    os.remove(filler)
    restarted = project.watch_restart(tune_run.id)

    assert restarted.returncode == 0, restarted.output[-4000:]
    assert project.run(tune_run.id).status == "completed"
    trials = project.trials(tune_run)
    assert [t["trial"] for t in trials] == list(range(1, MAX_TRIALS + 1))
    assert {t["status"] for t in trials} == {"completed"}, restarted.output[-4000:]
    # No trial twice: each completed evaluate run is the one run of one trial.
    statuses = project.statuses("evaluate")
    completed = {run_id for run_id, s in statuses.items() if s == "completed"}
    assert completed == {t["runs"]["evaluate"] for t in trials}
    _journal_lines(tune_run.dir)
    assert still_running(restarted.processes) == []
