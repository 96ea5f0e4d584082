"""What the engine tells the rest of a tune, in order: Ray is up, the search
starts, and each trial starts, reports and ends.

The journal (resume), the trial records and the progress lines (results) each
listen; the engine knows none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from gpkg_ray.trial.outcome import TrialOutcome


@dataclass(frozen=True)
class SearchStarted:
    """The search of this attempt, as it starts."""

    trials: int
    """Trials this attempt starts (interrupted ones run again included)."""
    seed: int
    scheduler: str
    """The scheduler, described in words."""
    note: str = ""
    """Something the user should know about this search."""


class TuneListener:
    """Receives a tune's events on the driver. Every method does nothing
    here: a listener overrides those it needs."""

    def ray_starting(self, temp_dir: str) -> None:
        """An embedded Ray is about to start in `temp_dir` (not made yet)."""

    def ray_started(self, temp_dir: str, processes: list[psutil.Process]) -> None:
        """An embedded Ray is up: its temp dir, and the processes it started."""

    def search_started(self, search: SearchStarted) -> None: ...

    def trial_started(self, outcome: TrialOutcome) -> None: ...

    def trial_updated(self, outcome: TrialOutcome) -> None: ...

    def trial_ended(self, outcome: TrialOutcome) -> None: ...

    def search_waiting(self, why: str) -> None:
        """No trial runs, and the next one cannot start yet: `why`."""


class Listeners(TuneListener):
    """Forwards every event to several listeners, in order."""

    def __init__(self, *listeners: TuneListener):
        self.listeners = listeners

    def ray_starting(self, temp_dir: str) -> None:
        for listener in self.listeners:
            listener.ray_starting(temp_dir)

    def ray_started(self, temp_dir: str, processes: list[psutil.Process]) -> None:
        for listener in self.listeners:
            listener.ray_started(temp_dir, processes)

    def search_started(self, search: SearchStarted) -> None:
        for listener in self.listeners:
            listener.search_started(search)

    def trial_started(self, outcome: TrialOutcome) -> None:
        for listener in self.listeners:
            listener.trial_started(outcome)

    def trial_updated(self, outcome: TrialOutcome) -> None:
        for listener in self.listeners:
            listener.trial_updated(outcome)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        for listener in self.listeners:
            listener.trial_ended(outcome)

    def search_waiting(self, why: str) -> None:
        for listener in self.listeners:
            listener.search_waiting(why)
