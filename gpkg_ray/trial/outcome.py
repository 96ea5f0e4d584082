"""What the driver knows of one trial, as it starts, reports and ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Status = Literal["running", "completed", "failed", "stopped"]
"""`stopped`: ended early by a scheduler, a limit, the time budget or a stop of
the tune; `failed`: a step failed or recorded no objective."""


@dataclass
class TrialOutcome:
    number: int
    """1-based, in the order trials started."""
    values: dict[str, Any]
    """Every param's value in this trial, sampled or fixed, by space key."""
    status: Status = "running"
    objective: float | None = None
    runs: dict[str, str] = field(default_factory=dict)
    """Step name -> Guild run id."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Latest value of each step scalar, as `STEP/TAG`."""
    error: str | None = None
    stop_reason: str | None = None
    penalized: bool = False
    """Stopped at a limit, with the limit penalty as its objective."""
    progress: int | None = None
    """Steps of the scheduler metric the trial reached (its scheduler time)."""
    started: float = field(default_factory=time.time)
    ended: float | None = None


class TrialListener(Protocol):
    """Receives trial events on the driver, in order, for each trial."""

    def trial_started(self, outcome: TrialOutcome) -> None: ...

    def trial_updated(self, outcome: TrialOutcome) -> None: ...

    def trial_ended(self, outcome: TrialOutcome) -> None: ...


class Listeners:
    """Forwards trial events to several listeners, in order."""

    def __init__(self, *listeners):
        self.listeners = listeners

    def trial_started(self, outcome: TrialOutcome) -> None:
        for listener in self.listeners:
            listener.trial_started(outcome)

    def trial_updated(self, outcome: TrialOutcome) -> None:
        for listener in self.listeners:
            listener.trial_updated(outcome)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        for listener in self.listeners:
            listener.trial_ended(outcome)
