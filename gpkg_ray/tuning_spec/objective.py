"""The objectives: which values of which steps a search maximizes or minimizes,
and the constraints a trial must meet.

    optimize:
      - max: evaluate#acc                  # a scalar a step logs
    optimize:                              # several: a Pareto front
      - max: evaluate#acc
      - min: train#seconds
    optimize:                              # one weighted sum (Hypermax's form):
      - max: {evaluate#acc: 1, wall-minutes: -0.01}   # acc - 0.01 per minute
        name: score                        # its name in records (default
                                           # `objective`)
    constraints:
      - max: train#memory_mb               # at most 2000
        limit: 2000

A target is `[STEP#]SCALAR` (a scalar the step logs; the step defaults to
the last one), `[STEP#]FILE:KEY` (a value in a file the step's run writes:
`.json`, `.yaml`/`.yml`, or `.csv`, whose last row is read), or a wall time:
`wall-seconds`, `wall-minutes` or `wall-hours` of the whole trial, or
`STEP#wall-minutes` of one step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gpkg_ray.errors import SpecError

_HOW_TO = "write `optimize: [{max: SCALAR}]` or `[{min: STEP#SCALAR}]`"

WALL_TIME_UNITS = {"wall-seconds": 1.0, "wall-minutes": 60.0, "wall-hours": 3600.0}
"""Targets that are a wall time, and their unit in seconds."""
FILE_SUFFIXES = (".json", ".yaml", ".yml", ".csv")
"""Run files a target may read a value from."""
WEIGHTED_NAME = "objective"
"""The default name of a weighted objective in records and tables."""

Kind = Literal["scalar", "file", "time"]


@dataclass(frozen=True)
class Target:
    """One value a trial gives: a step's scalar, a value in a file its run
    writes, or a wall time (of one step, or of the whole trial: `step` None)."""

    step: str | None
    name: str
    """The scalar's tag, `FILE:KEY`, or a wall-time name (`wall-minutes`)."""
    kind: Kind = "scalar"

    def describe(self) -> str:
        return self.name if self.step is None else f"{self.step}#{self.name}"

    @property
    def file(self) -> str:
        return self.name.partition(":")[0]

    @property
    def key(self) -> str:
        return self.name.partition(":")[2]

    @property
    def seconds(self) -> float:
        """A wall-time target's unit, in seconds."""
        return WALL_TIME_UNITS[self.name]


@dataclass(frozen=True)
class Objective:
    scalar: str
    """The name the objective is recorded under: its scalar's tag, or a
    weighted objective's name."""
    mode: Literal["max", "min"]
    step: str
    """Name of the step after which the value is known (the step whose run
    records the scalar, for a plain objective)."""
    terms: tuple[tuple[Target, float], ...] = field(default=())
    """(target, weight): the value is the weighted sum of the targets. Empty:
    the plain scalar `scalar` of `step`, weight 1."""

    def __post_init__(self) -> None:
        if not self.terms:
            plain = ((Target(self.step, self.scalar), 1.0),)
            object.__setattr__(self, "terms", plain)

    @property
    def plain(self) -> bool:
        """A scalar a step logs, as it is: its value is known as it is logged
        (schedulers and limits may watch it), not only once the trial ends."""
        ((target, weight),) = self.terms if len(self.terms) == 1 else ((None, 0),)
        return (
            target is not None
            and weight == 1.0
            and target.kind == "scalar"
            and (target.step, target.name) == (self.step, self.scalar)
        )

    @property
    def targets(self) -> tuple[Target, ...]:
        return tuple(target for target, _ in self.terms)

    def describe(self) -> str:
        if self.plain:
            return f"{self.mode} {self.step}#{self.scalar}"
        if len(self.terms) == 1 and self.terms[0][1] == 1.0:
            return f"{self.mode} {self.terms[0][0].describe()}"
        terms = " ".join(
            f"{'-' if weight < 0 else '+'} {abs(weight):g}*{target.describe()}"
            for target, weight in self.terms
        ).removeprefix("+ ")
        return f"{self.mode} {self.scalar} = {terms}"

    def value(self, values: Mapping[Target, float]) -> float | None:
        """The objective from its targets' values; None while one is missing."""
        if any(target not in values for target in self.targets):
            return None
        return sum(weight * values[target] for target, weight in self.terms)

    def is_better(self, value: float, than: float | None) -> bool:
        """Whether `value` beats `than`; a NaN or infinite value never ranks
        (NaN compares false with everything, and would stay the best)."""
        if not math.isfinite(value):
            return False
        if than is None or not math.isfinite(than):
            return True
        return value > than if self.mode == "max" else value < than


@dataclass(frozen=True)
class Constraint:
    """A bound a trial's value must keep: at most `limit` (`max`) or at least
    `limit` (`min`). A trial that breaks it is infeasible: kept and shown, never
    the best, and told to a searcher that takes constraints."""

    target: Target
    bound: Literal["max", "min"]
    limit: float

    def describe(self) -> str:
        sign = "<=" if self.bound == "max" else ">="
        return f"{self.target.describe()} {sign} {self.limit:g}"

    def violation(self, value: float) -> float:
        """How far `value` is past the limit: > 0 breaks it (Optuna's form)."""
        return value - self.limit if self.bound == "max" else self.limit - value


def parse_objective(
    raw: Any, step_names: list[str], key: str = "optimize"
) -> Objective:
    """One objective from op config `optimize` (or another `key` of the same
    form, such as `scheduler-metric`): one plain scalar of a step; the step
    defaults to the last one."""
    how_to = _HOW_TO.replace("optimize", key)
    objectives = parse_objectives(raw, step_names, key)
    if len(objectives) != 1:
        raise SpecError(
            f"'{key}' lists {len(objectives)} objectives; one is supported: {how_to}"
        )
    if not objectives[0].plain:
        raise SpecError(
            f"'{key}' must name one scalar a step logs (no weights, files or "
            f"wall times): {how_to}"
        )
    return objectives[0]


def parse_objectives(
    raw: Any, step_names: list[str], key: str = "optimize"
) -> tuple[Objective, ...]:
    """The objectives of op config `optimize`: one, or several (a Pareto front)."""
    how_to = _HOW_TO.replace("optimize", key)
    if raw is None:
        raise SpecError(f"config has no '{key}': {how_to}")
    entries = raw if isinstance(raw, list) else [raw]
    if not entries:
        raise SpecError(f"'{key}' is empty: {how_to}")
    objectives = [_objective(entry, step_names, key, how_to) for entry in entries]
    weighted = [o for o in objectives if o.scalar == WEIGHTED_NAME and not o.plain]
    for i, objective in enumerate(weighted[1:], 2):  # objective, objective_2, ...
        objectives[objectives.index(objective)] = _renamed(objective, f"_{i}")
    names = [o.scalar for o in objectives]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise SpecError(
            f"'{key}' has two objectives named '{twice}': give one a `name: NAME`"
        )
    return tuple(objectives)


def _renamed(objective: Objective, suffix: str) -> Objective:
    return Objective(
        objective.scalar + suffix, objective.mode, objective.step, objective.terms
    )


def _objective(entry: Any, step_names: list[str], key: str, how_to: str) -> Objective:
    if not isinstance(entry, dict):
        raise SpecError(f"malformed '{key}' entry {entry!r}: {how_to}")
    modes = [m for m in entry if m in ("max", "min")]
    unknown = [k for k in entry if k not in ("max", "min", "name")]
    if unknown:
        raise SpecError(f"'{key}' uses '{unknown[0]}': {how_to}")
    if len(modes) != 1:
        raise SpecError(
            f"'{key}' entry {entry!r} needs one of max or min, not "
            f"{len(modes)}: {how_to}"
        )
    mode = modes[0]
    raw = entry[mode]
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise SpecError(f"'{key}' entry name must be a text, not {name!r}")
    if isinstance(raw, dict):
        return _weighted(raw, mode, name, step_names, key)
    target = parse_target(raw, step_names, key, mode)
    if name is None and target.kind == "scalar":
        return Objective(scalar=target.name, mode=mode, step=target.step or "")
    terms = ((target, 1.0),)
    default = target.key if target.kind == "file" else target.name
    return Objective(name or default, mode, _known_after(terms, step_names), terms)


def _weighted(
    raw: dict, mode: str, name: str | None, step_names: list[str], key: str
) -> Objective:
    """`{TARGET: WEIGHT, ...}`: the weighted sum of the targets."""
    if not raw:
        raise SpecError(f"'{key}' {mode} has no targets: give {{TARGET: WEIGHT}}")
    terms = []
    for text, weight in raw.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise SpecError(
                f"'{key}' weight of '{text}' must be a number, not {weight!r} "
                "(e.g. `{evaluate#acc: 1, wall-minutes: -0.01}`)"
            )
        if not math.isfinite(weight) or weight == 0:
            raise SpecError(f"'{key}' weight of '{text}' must be a finite non-zero")
        terms.append((parse_target(text, step_names, key, mode), float(weight)))
    terms_t = tuple(terms)
    return Objective(
        name or WEIGHTED_NAME, mode, _known_after(terms_t, step_names), terms_t
    )


def _known_after(terms, step_names: list[str]) -> str:
    """The last step a value of `terms` needs (a trial's wall time: the last)."""
    steps = [t.step or step_names[-1] for t, _ in terms]
    return max(steps, key=step_names.index)


def parse_target(raw: Any, step_names: list[str], key: str, mode: str) -> Target:
    """`[STEP#]SCALAR`, `[STEP#]FILE:KEY` or `[STEP#]wall-minutes` (and
    -seconds, -hours)."""
    how_to = _HOW_TO.replace("optimize", key)
    if not isinstance(raw, str) or not raw.strip():
        raise SpecError(f"'{key}' {mode} needs a scalar name: {how_to}")
    step, _, name = raw.strip().rpartition("#")
    if not name:
        raise SpecError(f"'{key}' {mode} needs a scalar name: {how_to}")
    if step and step not in step_names:
        raise SpecError(
            f"'{key}' names step '{step}', which is not in steps "
            f"({', '.join(step_names)})"
        )
    if name in WALL_TIME_UNITS:
        return Target(step or None, name, "time")
    file, colon, file_key = name.partition(":")
    if colon and file.lower().endswith(FILE_SUFFIXES):
        if not file_key:
            raise SpecError(
                f"'{key}' target '{raw}' names no key in {file}: write {file}:KEY"
            )
        return Target(step or step_names[-1], name, "file")
    return Target(step or step_names[-1], name, "scalar")


def parse_constraints(raw: Any, step_names: list[str]) -> tuple[Constraint, ...]:
    """`constraints: [{max: TARGET, limit: N}, {min: TARGET, limit: N}]`."""
    how_to = "write `constraints: [{max: STEP#SCALAR, limit: NUMBER}]`"
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raw = [raw]
    constraints = []
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) - {"max", "min", "limit"}:
            raise SpecError(f"malformed 'constraints' entry {entry!r}: {how_to}")
        bounds = [b for b in ("max", "min") if b in entry]
        if len(bounds) != 1:
            raise SpecError(
                f"'constraints' entry {entry!r} needs one of max or min: {how_to}"
            )
        limit = entry.get("limit")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int | float)
            or not math.isfinite(limit)
        ):
            raise SpecError(
                f"'constraints' entry {entry!r} needs a number as limit: {how_to}"
            )
        bound = bounds[0]
        target = parse_target(entry[bound], step_names, "constraints", bound)
        constraints.append(Constraint(target, bound, float(limit)))
    return tuple(constraints)
