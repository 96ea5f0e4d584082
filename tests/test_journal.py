"""The tune journal: what a kill at any moment leaves can be read back."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from gpkg_ray.engine.local_ray import new_temp_dir
from gpkg_ray.errors import DiskFull
from gpkg_ray.resume.journal import JOURNAL, Journal, read_journal
from gpkg_ray.resume.leftovers import end_attempt
from gpkg_ray.trial.outcome import TrialOutcome


def _outcome(number: int, **changes) -> TrialOutcome:
    outcome = TrialOutcome(number=number, values={"lr": 0.01 * number})
    for name, value in changes.items():
        setattr(outcome, name, value)
    return outcome


def test_latest_line_of_each_trial_wins(tmp_path):
    journal = Journal(str(tmp_path))
    journal.attempt(1, seed=7)
    me = psutil.Process()
    journal.ray_started("/tmp/gpkg-ray-x", [me])
    first = _outcome(1)
    journal.trial_started(first)
    first.runs["train"] = "a" * 32
    journal.trial_updated(first)
    journal.trial_updated(first)  # no new run: nothing written
    first.status, first.objective = "completed", 0.9
    journal.trial_ended(first)
    journal.trial_started(_outcome(2))

    state = read_journal(str(tmp_path))

    assert (tmp_path / JOURNAL).read_text().count("\n") == 6
    assert state.seed == 7
    assert state.attempts[0]["processes"] == [[me.pid, me.create_time()]]
    assert state.attempts[0]["ray_temp_dir"] == "/tmp/gpkg-ray-x"
    assert state.outcomes[1] == first
    assert state.outcomes[2].status == "running"


def test_a_line_cut_short_by_a_kill_is_ignored_and_not_continued(tmp_path):
    journal = Journal(str(tmp_path))
    journal.trial_started(_outcome(1))
    with open(tmp_path / JOURNAL, "a") as f:
        f.write('{"event": "trial", "outcome": {"number": 2, "val')  # killed here

    assert sorted(read_journal(str(tmp_path)).outcomes) == [1]

    journal.trial_started(_outcome(3))  # the next attempt writes on
    assert sorted(read_journal(str(tmp_path)).outcomes) == [1, 3]


def test_an_outcome_round_trips_with_its_earlier_attempts(tmp_path):
    outcome = _outcome(4, runs={"train": "r1", "evaluate": "r2"})
    outcome.restart("the tune was killed")
    outcome.runs["train"] = "r3"

    again = TrialOutcome.from_json(outcome.to_json())

    assert again == outcome
    assert again.earlier_runs == [("train", "r1"), ("evaluate", "r2")]
    assert (again.attempt, again.status, again.restart_reason) == (
        2,
        "running",
        "the tune was killed",
    )


def test_no_journal_means_a_first_attempt(tmp_path):
    state = read_journal(str(tmp_path))
    assert state.attempts == [] and state.outcomes == {} and state.seed is None


def test_a_journal_of_an_earlier_form_reads_back(tmp_path):
    # Before the journal and trials.json shared one form of a trial, the
    # journal wrote its number as `number`.
    old = TrialOutcome(number=3, values={"lr": 0.1}, status="completed")
    line = {"event": "trial", "outcome": old.to_json()}
    line["outcome"]["number"] = line["outcome"].pop("trial")
    (tmp_path / JOURNAL).write_text(json.dumps(line) + "\n")

    assert read_journal(str(tmp_path)).outcomes == {3: old}


def test_the_journals_directory_entry_is_synced_when_it_is_created(
    tmp_path, monkeypatch
):
    """The journal fsynced its file, not the run dir that names it: a machine
    lost just after could keep the data and lose the name (issue 18)."""
    synced: list[str] = []
    fsync = os.fsync

    def noting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", noting_fsync)
    journal = Journal(str(tmp_path))

    journal.attempt(1, seed=7)
    assert synced == [str(tmp_path / JOURNAL), str(tmp_path)]
    synced.clear()
    journal.trial_started(_outcome(1))  # appended: the name is on disk already
    assert synced == [str(tmp_path / JOURNAL)]


@pytest.fixture
def full_disk(tmp_path):
    """A run directory on a small tmpfs, filled to the last byte (root mounts
    it, as in CI); unmounted at the end."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(run_dir)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield run_dir
    finally:
        subprocess.run(["umount", "--lazy", str(run_dir)], check=True)


def test_a_full_disk_leaves_the_journal_whole(full_disk):
    journal = Journal(str(full_disk))
    journal.attempt(1, seed=7)
    journal.trial_started(_outcome(1))
    before = (full_disk / JOURNAL).read_bytes()
    with (
        open(full_disk / "filler", "wb", buffering=0) as f,
        contextlib.suppress(OSError),
    ):
        while True:
            f.write(b"\0" * 4096)
    long = _outcome(1, status="completed", error="x" * 20000)  # past one page

    with pytest.raises(DiskFull) as raised:
        journal.trial_ended(long)

    assert (full_disk / JOURNAL).read_bytes() == before  # no part of a line
    assert str(raised.value).startswith("the disk is full (No space left on device")
    assert "`guild run --restart run` finishes the search" in str(raised.value)
    os.remove(full_disk / "filler")
    journal.trial_ended(long)
    assert read_journal(str(full_disk)).outcomes[1].status == "completed"


def test_a_ray_temp_dir_is_journaled_before_it_exists_and_a_restart_removes_it(
    tmp_path,
):
    # A tune killed while its embedded Ray started (after the dir was made and
    # filled, before Ray's processes were journaled) left the dir for good.
    journal = Journal(str(tmp_path))
    journal.attempt(1, seed=1)
    seen = []

    def announce(path: str) -> None:
        seen.append(os.path.exists(path))
        journal.ray_starting(path)

    temp_dir = new_temp_dir(announce)  # killed here: no ray_started line
    (Path(temp_dir) / "session_latest").mkdir()

    (attempt,) = read_journal(str(tmp_path)).attempts
    assert seen == [False]
    assert attempt["ray_temp_dir"] == temp_dir
    assert end_attempt(attempt) == 0
    assert not os.path.exists(temp_dir)
