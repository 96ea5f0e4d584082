"""Progress lines in the tune run's output, one per trial as it ends."""

from __future__ import annotations

import sys
from typing import TextIO

from guild import flag_util

from gpkg_ray.spec import Objective
from gpkg_ray.trial.outcome import TrialOutcome


class ProgressPrinter:
    """A TrialListener that prints a line when a trial ends."""

    def __init__(
        self,
        total: int,
        objective: Objective,
        out: TextIO = sys.stdout,
        best: float | None = None,
    ):
        self.total = total
        self.objective = objective
        self.out = out
        self.best = best
        """Best objective so far (of earlier attempts, when resumed)."""

    def trial_started(self, outcome: TrialOutcome) -> None:
        if outcome.attempt > 1:
            print(
                f"trial {outcome.number}/{self.total} runs again (attempt "
                f"{outcome.attempt}): {outcome.restart_reason}",
                file=self.out,
                flush=True,
            )

    def trial_updated(self, outcome: TrialOutcome) -> None:
        pass

    def trial_ended(self, outcome: TrialOutcome) -> None:
        head = f"trial {outcome.number}/{self.total} {outcome.status}"
        if outcome.status == "failed":
            line = f"{head}: {outcome.error}"
        elif outcome.status == "stopped":
            line = f"{head}: {outcome.stop_reason}"
            if outcome.penalized:
                line += (
                    f", {self.objective.scalar}={outcome.objective:g} (limit-penalty)"
                )
        else:
            assigns = flag_util.flag_assigns(outcome.values, truncate_floats=True)
            values = " ".join(assigns)
            line = f"{head}  {self.objective.scalar}={outcome.objective:.6g}  {values}"
            if self.objective.is_better(outcome.objective, self.best):
                self.best = outcome.objective
                line += "  (best so far)"
        print(line, file=self.out, flush=True)
