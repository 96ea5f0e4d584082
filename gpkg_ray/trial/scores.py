"""A trial's scores once its steps ended: each objective's value, and how far
each constraint is broken, from the values of their targets (a step's scalar,
a value in a run file, a wall time)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gpkg_ray.tuning_spec.objective import Target


@dataclass(frozen=True)
class Scores:
    objectives: list[float]
    """Each objective's value, in the order of `optimize`."""
    violations: list[float]
    """Each constraint's violation (> 0: broken), in the order of
    `constraints`."""

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations)


class ScoreError(Exception):
    """A value the scores need is not finite: one line naming it."""


def needed_targets(plan) -> list[Target]:
    """Every target the plan's objectives and constraints read, once each."""
    targets = [t for o in plan.objectives for t in o.targets]
    targets += [c.target for c in plan.constraints]
    return list(dict.fromkeys(targets))


def missing_target(plan, values: Mapping[Target, float]) -> Target | None:
    return next((t for t in needed_targets(plan) if t not in values), None)


def scores(plan, values: Mapping[Target, float]) -> Scores:
    """The scores from every needed value (see `missing_target`). Raises
    ScoreError on a NaN or infinite objective or constrained value: no
    searcher can rank it, and NaN compares false with everything."""
    objectives = []
    for objective in plan.objectives:
        value = objective.value(values)
        assert value is not None
        if not math.isfinite(value):
            raise ScoreError(
                f"objective '{objective.scalar}' is {value} "
                f"({objective.describe()}): it must be a finite number"
            )
        objectives.append(value)
    violations = []
    for constraint in plan.constraints:
        value = values[constraint.target]
        if not math.isfinite(value):
            raise ScoreError(
                f"constraint {constraint.describe()}: "
                f"{constraint.target.describe()} is {value}, not a finite number"
            )
        violations.append(constraint.violation(value))
    return Scores(objectives, violations)
