"""Fail fast: a search whose first trials all fail the same way stops.

A systematic failure (the objective names a scalar no step logs, a step that
cannot start, a dependency that does not resolve) fails every trial alike, and
running the rest of the search would only repeat it, one trial after another.
The rule (docs/guide.md, "Failures and errors"):

    If the first N trials to end (N is the `fail-fast` flag, 3 by default; 0
    turns the rule off) all failed with the same error, the search stops: the
    trials still running are stopped, and the tune ends with the line
    `tune stopped: the first N trials failed the same way: ERROR`.

Errors are compared with run ids taken out, since each trial's error names its
own runs. The rule is decided once, when the Nth trial ends: a trial that
completes, or an error that differs, turns it off for the rest of the search.
Trials count from the start of this run of the tune: a restart (once the cause
is fixed, say) is checked on its own first N trials, not on the failures that
stopped the run before. Trials interrupted by a stop of the tune do not count,
nor do trials whose Ray worker was lost (a node that died fails its trials
alike, through no fault of theirs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gpkg_ray.errors import LOST_WORKER
from gpkg_ray.listener import TuneListener
from gpkg_ray.trial.outcome import TrialOutcome

_RUN_ID = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{8}\b")
"""A Guild run id, whole or short (as trial errors name runs: `run 1a2b3c4d`)."""


def failure_key(error: str) -> str:
    """`error` with its run ids taken out: what two trials' errors share when
    they failed the same way."""
    return _RUN_ID.sub("<run>", error)


@dataclass(frozen=True)
class SystematicFailure:
    """The first `trials` trials failed alike; `error` is the first one's."""

    trials: int
    error: str

    @property
    def summary(self) -> str:
        """Why the search stopped, without the error (for the trials it stopped)."""
        return f"the first {self.trials} trials failed the same way"

    def __str__(self) -> str:
        return f"tune stopped: {self.summary}: {self.error}"


def systematic_failure(ended: Sequence[TrialOutcome]) -> SystematicFailure | None:
    """The failure all of `ended` (trials in the order they ended) share, if
    every one failed with the same error; else None."""
    if not ended or any(o.status != "failed" or not o.error for o in ended):
        return None
    if len({failure_key(o.error) for o in ended}) > 1:
        return None
    return SystematicFailure(len(ended), ended[0].error)


class FailFast(TuneListener):
    """Watches trials end; once the first `trials` have ended, decides whether
    they failed the same way (see the module docstring). `failure` then says
    so, and the engine stops the search."""

    def __init__(self, trials: int):
        self.trials = trials
        self.failure: SystematicFailure | None = None
        self._ended: list[TrialOutcome] = []

    @property
    def decided(self) -> bool:
        return self.trials == 0 or len(self._ended) >= self.trials

    def trial_ended(self, outcome: TrialOutcome) -> None:
        if self.decided or outcome.interrupted or _lost_worker(outcome):
            return
        self._ended.append(outcome)
        if self.decided:
            self.failure = systematic_failure(self._ended)


def _lost_worker(outcome: TrialOutcome) -> bool:
    return bool(outcome.error) and outcome.error.startswith(LOST_WORKER)
