"""Live progress in the tune run's output: a line as each trial starts and ends,
and after each end a status line with the counts, the time left and the best
trial so far.

Guild reads an op's output through a pipe and copies it to the terminal and to
the run's output log, so the tuner never writes to a terminal: the status is
printed as plain lines, with no control characters, each at most 80 columns
(an error message is kept whole).

    [0:07] trial 2/8 started: lr=0.0123 batch-size=64 dropout=0.31
    [0:07] trial 1/8 runs again (attempt 2): the tune was killed
    [0:07] trial 1/8: train reused (run 1a2b3c4d)
    [0:12] trial 1/8 completed: acc_val=0.8123 (best so far)
    [0:12] 1 running, 1/8 done (1 completed, 0 stopped, 0 failed), ~0:36 left
           best acc_val=0.8123: trial 1, lr=0.0012 batch-size=64 dropout=0.22
"""

from __future__ import annotations

import sys
import textwrap
import time
from typing import Any, TextIO

from gpkg_ray.listener import SearchStarted, TuneListener
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Objective, TuneSpec

WIDTH = 80


class SearchHeader(TuneListener):
    """Prints what the search does as it starts:

    Tuning train, evaluate: max evaluate#acc_val
    Search: tpe, seed 7, 8 trials on cluster=local
    Scheduler: fifo (every trial runs to its end)
    """

    def __init__(self, spec: TuneSpec, out: TextIO | None = None):
        self.spec = spec
        self._out = out

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    def search_started(self, search: SearchStarted) -> None:
        plan, settings = self.spec.plan, self.spec.settings
        steps = ", ".join(s.name for s in plan.steps)
        objectives = "; ".join(o.describe() for o in plan.objectives)
        print(f"Tuning {steps}: {objectives}", file=self.out)
        if plan.constraints:
            bounds = ", ".join(c.describe() for c in plan.constraints)
            print(f"Constraints: {bounds}", file=self.out)
        print(
            f"Search: {settings.search}, seed {search.seed}, {search.trials} trials "
            f"on cluster={settings.cluster}",
            file=self.out,
        )
        print(f"Scheduler: {search.scheduler}", file=self.out, flush=True)
        if search.note:
            print_note(search.note, self.out)


def print_note(note: str, out: TextIO | None = None) -> None:
    """A note, wrapped to 80 columns (the tune's output is read in terminals
    and in log files)."""
    text = textwrap.fill(f"Note: {note}", width=WIDTH, subsequent_indent="  ")
    print(text, file=out or sys.stdout, flush=True)


class ProgressPrinter(TuneListener):
    """Prints the progress of a search. `total` is the trials of the tune,
    those of earlier attempts included: set again as the search starts."""

    def __init__(
        self,
        total: int,
        objective: Objective,
        searched: list[str],
        *,
        finished: list[TrialOutcome] = (),
        time_budget: float = 0,
        out: TextIO = sys.stdout,
        started: float | None = None,
        clock=time.time,
        objectives: tuple[Objective, ...] = (),
    ):
        """`objectives`: every objective, with several (`objective` first)."""
        self.total = total
        self.objective = objective
        self.names = [o.scalar for o in objectives or (objective,)]
        self.searched = searched
        """Space keys whose values vary: the fixed ones are not repeated."""
        self.out = out
        self.clock = clock
        self.started = clock() if started is None else started
        """Start of this attempt of the tune: elapsed time counts from here."""
        self.time_budget = time_budget
        self.ended: dict[int, TrialOutcome] = {o.number: o for o in finished}
        """Ended trials by number, those of earlier attempts included."""
        self.running: dict[int, TrialOutcome] = {}
        self.best: TrialOutcome | None = None
        for outcome in finished:
            self._take_if_best(outcome)
        self._durations: list[float] = []
        self._most_running = 1
        self._told_reused: set[tuple[int, str, str]] = set()

    # TuneListener

    def search_started(self, search: SearchStarted) -> None:
        self.total = len(self.ended) + search.trials

    def trial_started(self, outcome: TrialOutcome) -> None:
        self.running[outcome.number] = outcome
        self._most_running = max(self._most_running, len(self.running))
        head = f"trial {outcome.number}/{self.total}"
        if outcome.attempt > 1:
            self._print(
                f"{head} runs again (attempt {outcome.attempt}): "
                f"{outcome.restart_reason}"
            )
        else:
            self._print(f"{head} started: {self._values(outcome)}", fit=True)

    def trial_updated(self, outcome: TrialOutcome) -> None:
        self._tell_reused(outcome)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        self._tell_reused(outcome)
        self.running.pop(outcome.number, None)
        self.ended[outcome.number] = outcome
        if outcome.ended is not None:
            self._durations.append(max(0.0, outcome.ended - outcome.started))
        new_best = self._take_if_best(outcome)
        self._print(self._end_line(outcome, new_best))
        self._print(self.status_line(), fit=True)
        if new_best:
            self._print(self.best_line(), fit=True, stamp=False)

    def search_waiting(self, why: str) -> None:
        width = WIDTH - len(self._stamp())
        first, *rest = textwrap.wrap(f"waiting {why}", width=width)
        self._print(first)
        for line in rest:
            self._print(line, stamp=False)

    # Lines

    def _tell_reused(self, outcome: TrialOutcome) -> None:
        """A line for each step run of an earlier attempt the trial took
        instead of running the step again, once."""
        for step, run_id in outcome.reused.items():
            told = (outcome.number, step, run_id)
            if told not in self._told_reused:
                self._told_reused.add(told)
                head = f"trial {outcome.number}/{self.total}"
                self._print(f"{head}: {step} reused (run {run_id[:8]})", fit=True)

    def _end_line(self, outcome: TrialOutcome, new_best: bool) -> str:
        head = f"trial {outcome.number}/{self.total} {outcome.status}"
        scalar = self.objective.scalar
        if outcome.status == "failed":
            return f"{head}: {outcome.error}"
        if outcome.status == "stopped":
            line = f"{head}: {outcome.stop_reason}"
            if outcome.penalized:
                line += f", {scalar}={outcome.objective:g} (limit-penalty)"
            return line
        values = outcome.objective_values()
        if len(values) == len(self.names) > 1:
            line = f"{head}: " + " ".join(
                f"{name}={_number(value)}"
                for name, value in zip(self.names, values, strict=True)
            )
        else:
            line = f"{head}: {scalar}={_number(outcome.objective)}"
        if not outcome.feasible:
            return line + "  (infeasible: breaks a constraint)"
        return line + ("  (best so far)" if new_best else "")

    def status_line(self) -> str:
        counts = ", ".join(
            f"{self._count(status)} {status}"
            for status in ("completed", "stopped", "failed")
        )
        line = f"{len(self.running)} running, {len(self.ended)}/{self.total} done "
        line += f"({counts})"
        left = self.seconds_left()
        if left is not None and len(self.ended) < self.total:
            line += f", ~{format_duration(left)} left"
        return line

    def best_line(self) -> str:
        best = self.best
        if best is None:
            return "no trial has completed yet"
        return (
            f"best {self.objective.scalar}={_number(best.objective)}: "
            f"trial {best.number}, {self._values(best)}"
        )

    def seconds_left(self) -> float | None:
        """Time the trials not yet ended will take, from the mean duration of the
        trials that ended in this attempt and the most trials seen running at
        once; capped by the time budget. None until a trial has ended."""
        if not self._durations:
            return None
        remaining = max(0, self.total - len(self.ended))
        mean = sum(self._durations) / len(self._durations)
        left = remaining * mean / self._most_running
        if self.time_budget:
            left = min(left, max(0.0, self.started + self.time_budget - self.clock()))
        return left

    # Helpers

    def _take_if_best(self, outcome: TrialOutcome) -> bool:
        if (
            outcome.status != "completed"
            or outcome.objective is None
            or not outcome.feasible
        ):
            return False
        best = self.best.objective if self.best else None
        if not self.objective.is_better(outcome.objective, best):
            return False
        self.best = outcome
        return True

    def _values(self, outcome: TrialOutcome) -> str:
        return format_values({k: outcome.values.get(k) for k in self.searched})

    def _count(self, status: str) -> int:
        return sum(1 for o in self.ended.values() if o.status == status)

    def _stamp(self) -> str:
        return f"[{format_duration(self.clock() - self.started)}] "

    def _print(self, line: str, fit: bool = False, stamp: bool = True) -> None:
        """Prints `line` after the time stamp (or as much space); `fit` cuts it
        to 80 columns."""
        head = self._stamp()
        if not stamp:
            head = " " * len(head)
        line = head + line
        if fit and len(line) > WIDTH:
            line = line[: WIDTH - 3] + "..."
        print(line, file=self.out, flush=True)


def format_duration(seconds: float) -> str:
    """`0:07`, `12:30`, `1:02:03`."""
    seconds = round(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


def format_values(values: dict[str, Any]) -> str:
    """`lr=0.00123 batch-size=64`: floats to 4 significant digits."""
    return " ".join(f"{key}={format_value(value)}" for key, value in values.items())


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
