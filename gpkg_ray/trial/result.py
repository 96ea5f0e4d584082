"""A trial's result: what a trial reports to Ray and what the driver reads back.

One typed result is all that passes between the trial (on a Ray worker), the
engine (Ray's callbacks on the driver), resume (results rebuilt from the runs on
disk) and the results (curves, records). Its keys in Ray's result dict are
defined here only, as Ray Tune's own `tune/result.py` does for its keys.

A result holds:

- `scalars`: the latest value of each scalar of each step so far, keyed
  `STEP/TAG` (`scalar_key`); a result is made per scalar step a run logs
  (`step: N`), in order;
- `objective`: the objective's latest value, once its step has recorded it
  (the first objective's, once the trial ended, when its scores are known
  only then: see TrialPlan.scored_at_end);
- `objectives` (each objective's value, with several) and `violations` (each
  constraint's, > 0: broken), in the result that ends the trial;
- `runs`: step name -> Guild run id, from the moment each step starts;
- `reused`: step name -> run id of the steps whose run is one an earlier
  attempt of the trial completed, taken instead of a new run (resume.reuse);
- `step`: the step running now;
- `scheduler_metric` and `scheduler_time`, only in a result that carries a new
  value of the plan's scheduler metric: that value, and the trial's time as
  schedulers count it (`scheduler_time`);
- `done` in the results made once every step ran, or `stopped` (why) in the
  last result when a limit stopped the trial and it ends with the limit penalty.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

OBJECTIVE = "objective"
"""The searchers' metric."""
SCHEDULER_METRIC = "scheduler_metric"
"""The schedulers' metric."""
SCHEDULER_TIME = "scheduler_time"
"""The schedulers' time attribute."""
VIOLATIONS = "constraint_violations"
GUILD_RUNS = "guild_runs"
REUSED_RUNS = "reused_runs"
TRIAL_STEP = "trial_step"
TRIAL_DONE = "trial_done"
TRIAL_STOPPED = "trial_stopped"


def objective_key(index: int) -> str:
    """The key of the objective at `index` (from 0) in a result: `objective`,
    then `objective_2`, ...: the searchers' metrics, with several objectives."""
    return OBJECTIVE if index == 0 else f"{OBJECTIVE}_{index + 1}"


def scalar_key(step: str, tag: str) -> str:
    """The key of a step's scalar in a result, a trial's metrics and records."""
    return f"{step}/{tag}"


def scheduler_time(logged_step: int, count: int) -> int:
    """A trial's time as schedulers count it, at the `count`-th value of the
    scheduler metric: the step the run logged it at, or `count` when larger, so
    a run that logs no `step` (all at step 0), or logs epochs from 0, still
    counts 1, 2, 3..."""
    return max(logged_step, count)


def non_finite_objective(step: str, run_id: str, scalar: str, value: float) -> str:
    """Why a trial whose objective is NaN or infinite failed: no searcher or
    scheduler can rank such a value (NaN compares false with everything)."""
    return (
        f"step {step} (run {run_id[:8]}) recorded {value} for objective "
        f"'{scalar}': it must be a finite number"
    )


@dataclass
class TrialResult:
    runs: dict[str, str] = field(default_factory=dict)
    reused: dict[str, str] = field(default_factory=dict)
    step: str | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    objective: float | None = None
    objectives: list[float] | None = None
    violations: list[float] | None = None
    scheduler_metric: float | None = None
    scheduler_time: int | None = None
    done: bool = False
    stopped: str | None = None

    def to_ray(self) -> dict[str, Any]:
        """The result as Ray takes it: flat, with fresh containers (Ray may
        hold a result after it is returned)."""
        result: dict[str, Any] = {GUILD_RUNS: dict(self.runs), **self.scalars}
        if self.reused:
            result[REUSED_RUNS] = dict(self.reused)
        optional = {
            TRIAL_STEP: self.step,
            OBJECTIVE: self.objective,
            SCHEDULER_METRIC: self.scheduler_metric,
            SCHEDULER_TIME: self.scheduler_time,
            TRIAL_STOPPED: self.stopped,
        }
        result.update((k, v) for k, v in optional.items() if v is not None)
        if self.objectives is not None and len(self.objectives) > 1:
            result.update((objective_key(i), v) for i, v in enumerate(self.objectives))
        if self.violations is not None:
            result[VIOLATIONS] = list(self.violations)
        if self.done:
            result[TRIAL_DONE] = True
        return result

    @classmethod
    def from_ray(cls, result: dict[str, Any], steps: Collection[str]) -> TrialResult:
        """A result Ray reported, less Ray's own keys; `steps` are the plan's
        step names, which tell scalars from Ray's bookkeeping."""
        return cls(
            runs=dict(result.get(GUILD_RUNS) or {}),
            reused=dict(result.get(REUSED_RUNS) or {}),
            step=result.get(TRIAL_STEP),
            scalars={
                key: value
                for key, value in result.items()
                if key.partition("/")[0] in steps
            },
            objective=result.get(OBJECTIVE),
            objectives=_objectives(result),
            violations=result.get(VIOLATIONS),
            scheduler_metric=result.get(SCHEDULER_METRIC),
            scheduler_time=result.get(SCHEDULER_TIME),
            done=bool(result.get(TRIAL_DONE)),
            stopped=result.get(TRIAL_STOPPED),
        )


def _objectives(result: dict[str, Any]) -> list[float] | None:
    """Each objective's value, with several: `objective`, `objective_2`, ..."""
    if objective_key(1) not in result:
        return None
    values, index = [], 0
    while objective_key(index) in result:
        values.append(result[objective_key(index)])
        index += 1
    return values
