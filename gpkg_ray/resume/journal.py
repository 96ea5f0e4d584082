"""The tune's journal: `journal.jsonl` in the tune run directory.

One JSON object per line, appended and flushed to disk as things happen, so a
tune killed at any moment (kill -9, a lost machine) leaves what it knew:

    {"event": "attempt", "attempt": 2, "seed": 7}
    {"event": "ray", "ray_temp_dir": "...", "processes": []}   # Ray starting
    {"event": "ray", "ray_temp_dir": "...", "processes": [[pid, start], ...]}
    {"event": "trial", "outcome": {...}}     # a trial started, got runs, ended

The latest `trial` line of a trial number is its state. A line cut short by a
kill is ignored. The run directory holds everything a restart needs, so it can
be copied to another Guild home and resumed there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import psutil

from gpkg_ray import faults
from gpkg_ray.errors import DiskFull, is_disk_full
from gpkg_ray.files import fsync_dir
from gpkg_ray.listener import TuneListener
from gpkg_ray.trial.outcome import TrialOutcome

JOURNAL = "journal.jsonl"


@dataclass
class JournalState:
    """What a tune run's journal says, at its last line."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[int, TrialOutcome] = field(default_factory=dict)
    """Every trial's latest outcome, by trial number."""

    @property
    def seed(self) -> int | None:
        return self.attempts[0].get("seed") if self.attempts else None


def read_journal(run_dir: str) -> JournalState:
    state = JournalState()
    try:
        with open(os.path.join(run_dir, JOURNAL)) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return state
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # cut short by a kill: the event was not finished
        if entry.get("event") == "attempt":
            state.attempts.append(entry)
        elif entry.get("event") == "ray" and state.attempts:
            state.attempts[-1].update(entry)  # what this attempt's Ray started
        elif entry.get("event") == "trial":
            outcome = TrialOutcome.from_json(entry["outcome"])
            state.outcomes[outcome.number] = outcome
    return state


class Journal(TuneListener):
    """Appends each attempt, Ray start and trial event to the journal."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(os.path.abspath(run_dir), JOURNAL)
        self._runs: dict[int, dict[str, str]] = {}

    def attempt(self, number: int, **info: Any) -> None:
        self._append({"event": "attempt", "attempt": number, **info})

    def ray_starting(self, temp_dir: str) -> None:
        """The embedded Ray's temp dir, before Ray makes and fills it: a kill
        while Ray starts leaves a dir the restart removes."""
        self._append({"event": "ray", "ray_temp_dir": temp_dir, "processes": []})

    def ray_started(self, temp_dir: str, processes: list[psutil.Process]) -> None:
        """The embedded Ray of the current attempt: what a restart must end if
        this attempt is killed."""
        from gpkg_ray.resume.leftovers import attempt_processes

        handles = attempt_processes(processes)
        self._append({"event": "ray", "ray_temp_dir": temp_dir, "processes": handles})

    def trial_started(self, outcome: TrialOutcome) -> None:
        self._write_trial(outcome)

    def trial_updated(self, outcome: TrialOutcome) -> None:
        # Only a new run matters to a restart: it must find and settle it.
        if outcome.runs != self._runs.get(outcome.number):
            self._write_trial(outcome)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        self._write_trial(outcome)

    def _write_trial(self, outcome: TrialOutcome) -> None:
        self._runs[outcome.number] = dict(outcome.runs)
        self._append({"event": "trial", "outcome": outcome.to_json()})

    def _append(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, default=str) + "\n").encode()
        created = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A killed writer can leave a partial line: start on a fresh one.
            if size and not _ends_with_newline(self.path):
                data = b"\n" + data
            try:
                half = len(data) // 2
                _write_all(fd, data[:half])
                faults.point("journal-write")  # a line cut on disk
                _write_all(fd, data[half:])
                os.fsync(fd)
            except OSError as e:
                # A full disk takes part of a line: the journal is left as it
                # was (cutting a file short needs no space).
                os.ftruncate(fd, size)
                if is_disk_full(e):
                    run_id = os.path.basename(os.path.dirname(self.path))
                    raise DiskFull(f"{e.strerror}: {self.path}", run_id) from e
                raise
        finally:
            os.close(fd)
        if created:  # the file's entry in the run dir is on disk too
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
