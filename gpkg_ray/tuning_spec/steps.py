"""Steps of a trial, resolved against the project's Guild operations.

This is the only part of the spec that reads Guild op definitions: what flags
each step defines, and which of its `requires` point at an earlier step, so that
a trial pins them to its own runs (`operation:train=<run id>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.space import FlagDef


@dataclass(frozen=True)
class Step:
    name: str
    """The step as written in `steps`."""
    opspec: str
    """What `guild run` is given: `model:op`, or `op` for the anonymous model."""
    flagdefs: dict[str, FlagDef] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)
    """Dependency flag (e.g. `operation:train`) -> the earlier step it names."""
    pipeline: bool = False
    """The op is a Guild `steps` op: its scalars are its step runs'."""
    batch: str | None = None
    """The directory of a Guild batch run whose proto this step's runs are
    trials of (see tuning_spec.batch): each run is made from the proto as
    Guild makes a batch trial, and started with `guild run --restart`."""
    requires: dict[str, str] = field(default_factory=dict)
    """Dependency flag (e.g. `operation:prepare`) -> Guild's op pattern, for
    each `operation:` requirement that no earlier step meets: a run from
    outside the trial, resolved once per tune (see `upstream`)."""


@dataclass(frozen=True)
class UpstreamRun:
    """A run from outside the trial that a step requires, as resolved once
    for the tune: each trial pins the step's dependency flag to it."""

    step: str
    flag: str
    """The dependency flag, e.g. `operation:prepare`."""
    given: str | None
    """The user's pin (a run id or a prefix of one) it was resolved from, as
    the space gives it to the step; None: Guild's choice (marked, else latest)."""
    run_id: str
    op: str
    """The run's op, as Guild shows it (`prepare`)."""


def resolve_steps(raw: Any, tune_opdef) -> tuple[list[Step], list]:
    """Steps from op config `steps`, checked against the tune op's Guild model,
    and the Guild op definition of each."""
    steps: list[Step] = []
    opdefs = []
    for name in _step_names(raw):
        opdef = find_opdef(name, tune_opdef)
        pins, requires = _pins(opdef, steps)
        steps.append(
            Step(
                name,
                _opspec(opdef),
                step_flagdefs(opdef),
                pins,
                requires=requires,
            )
        )
        opdefs.append(opdef)
    return steps, opdefs


def _step_names(raw: Any) -> list[str]:
    if raw is None:
        raise SpecError("config has no 'steps': list the ops of a trial, e.g. [train]")
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names:
        raise SpecError("'steps' must list op names, e.g. [train, evaluate]")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"'steps' has {name!r}: list op names, e.g. [train]")
    if len(set(names)) != len(names):
        raise SpecError("'steps' lists an op twice: list each op once")
    return [name.strip() for name in names]


def find_opdef(name: str, tune_opdef):
    model_name, _, op_name = name.rpartition(":")
    modeldef = tune_opdef.modeldef
    if model_name:
        modeldef = tune_opdef.guildfile.models.get(model_name)
    opdef = modeldef.get_operation(op_name) if modeldef else None
    if opdef is None:
        known = ", ".join(sorted(op.name for op in tune_opdef.modeldef.operations))
        raise SpecError(
            f"'steps' names unknown op '{name}': define it in guild.yml or use one "
            f"of: {known}"
        )
    if opdef is tune_opdef:
        raise SpecError(f"'steps' names the tune op '{name}' itself")
    return opdef


def _opspec(opdef) -> str:
    model = opdef.modeldef.name
    return f"{model}:{opdef.name}" if model else opdef.name


def step_flagdefs(opdef) -> dict[str, FlagDef]:
    """What the op's Guild definition says of each of its flags."""
    return {flag.name: _flagdef(flag) for flag in opdef.flags}


def _flagdef(flag) -> FlagDef:
    choices = tuple(c.value for c in flag.choices) if flag.choices else None
    return FlagDef(
        choices=choices,
        min=flag.min,
        max=flag.max,
        log_scale=(flag.distribution or "").replace("-", "") == "loguniform",
        float_valued=flag.type == "float" or isinstance(flag.default, float),
    )


def outside_requirements(opdef) -> dict[str, str]:
    """The `operation:` requirements of an op run alone (a batch's trial op):
    dependency flag -> Guild's op pattern (see Step.requires)."""
    return _pins(opdef, [])[1]


def _pins(opdef, earlier: list[Step]) -> tuple[dict[str, str], dict[str, str]]:
    """Dependency flags of `opdef` that require an op run by an earlier step
    (flag -> step), and the others (flag -> op pattern)."""
    pins, requires = {}, {}
    for op_pattern, flag in guild_api.operation_dependencies(opdef):
        upstream = _latest_matching(op_pattern, earlier)
        if upstream:
            pins[flag] = upstream.name
        else:
            requires[flag] = op_pattern
    return pins, requires


def _latest_matching(op_pattern: str, earlier: list[Step]) -> Step | None:
    """The last earlier step whose op matches Guild's `operation:` pattern."""
    for step in reversed(earlier):
        op_name = step.name.rpartition(":")[2]
        if re.fullmatch(op_pattern, step.name) or re.fullmatch(op_pattern, op_name):
            return step
    return None
