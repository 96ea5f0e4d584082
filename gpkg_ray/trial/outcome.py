"""What the driver knows of one trial, as it starts, reports and ends."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

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
    objectives: list[float] | None = None
    """Each objective's value, with several objectives (`objective` is the
    first of them)."""
    violations: list[float] | None = None
    """Each constraint's violation once the trial completed: > 0 breaks it."""
    runs: dict[str, str] = field(default_factory=dict)
    """Step name -> Guild run id."""
    reused: dict[str, str] = field(default_factory=dict)
    """Step name -> Guild run id of the steps whose run in `runs` is one an
    earlier attempt completed, taken again instead of a new run."""
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
    record: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Guild run id of the trial's record run (chosen up front, so the journal
    names it before the run exists)."""
    interrupted: bool = False
    """Stopped because the tune itself stopped or was killed, not on a result
    of its own: a restart of the tune runs the trial again."""
    attempt: int = 1
    """Which run of the trial this is: a restart of the tune, or a retry after a
    failure (max-failures), runs a trial again as its next attempt."""
    earlier_runs: list[tuple[str, str]] = field(default_factory=list)
    """(step name, Guild run id) of the runs of earlier attempts."""
    restart_reason: str | None = None
    """Why this attempt runs: how the previous one ended."""

    def restart(self, reason: str) -> None:
        """Starts the trial's next attempt; earlier runs stay linked to it."""
        self.earlier_runs += list(self.runs.items())
        self.attempt += 1
        self.restart_reason = reason
        self.status = "running"
        self.runs, self.reused, self.metrics = {}, {}, {}
        self.objective = self.error = self.stop_reason = self.progress = None
        self.objectives = self.violations = None
        self.penalized = self.interrupted = False
        self.started, self.ended = time.time(), None

    @property
    def feasible(self) -> bool:
        """Whether the trial keeps every constraint (or there is none)."""
        return not any(v > 0 for v in self.violations or ())

    def objective_values(self) -> list[float | None]:
        """Each objective's value (one, or several)."""
        if self.objectives is not None:
            return list(self.objectives)
        return [self.objective]

    def to_json(self) -> dict[str, Any]:
        """The trial as JSON, in the journal and in `trials.json` alike: its
        number first, as `trial`."""
        data = asdict(self)
        return {"trial": data.pop("number"), **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialOutcome:
        data = dict(data)
        # The number is written as `trial`; journals of gpkg.ray before this
        # form (one for the journal and trials.json) wrote `number`.
        if "trial" in data:
            data["number"] = data.pop("trial")
        known = {f.name for f in fields(cls)}
        outcome = cls(**{k: v for k, v in data.items() if k in known})
        outcome.earlier_runs = [tuple(pair) for pair in outcome.earlier_runs]
        return outcome
