"""The objective: which scalar of which step a search maximizes or minimizes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from gpkg_ray.errors import SpecError

_HOW_TO = "write `optimize: [{max: SCALAR}]` or `[{min: STEP#SCALAR}]`"


@dataclass(frozen=True)
class Objective:
    scalar: str
    mode: Literal["max", "min"]
    step: str
    """Name of the step whose run records the scalar."""

    def describe(self) -> str:
        return f"{self.mode} {self.step}#{self.scalar}"

    def is_better(self, value: float, than: float | None) -> bool:
        """Whether `value` beats `than`; a NaN or infinite value never ranks
        (NaN compares false with everything, and would stay the best)."""
        if not math.isfinite(value):
            return False
        if than is None or not math.isfinite(than):
            return True
        return value > than if self.mode == "max" else value < than


def parse_objective(
    raw: Any, step_names: list[str], key: str = "optimize"
) -> Objective:
    """Objective from op config `optimize` (or another `key` of the same form);
    the step defaults to the last one."""
    how_to = _HOW_TO.replace("optimize", key)
    if raw is None:
        raise SpecError(f"config has no '{key}': {how_to}")
    entries = raw if isinstance(raw, list) else [raw]
    if len(entries) != 1:
        raise SpecError(
            f"'{key}' lists {len(entries)} objectives; one is supported: {how_to}"
        )
    entry = entries[0]
    if not isinstance(entry, dict) or len(entry) != 1:
        raise SpecError(f"malformed '{key}' entry {entry!r}: {how_to}")
    ((mode, target),) = entry.items()
    if mode not in ("max", "min"):
        raise SpecError(f"'{key}' uses '{mode}': {how_to}")
    if not isinstance(target, str) or not target.strip():
        raise SpecError(f"'{key}' {mode} needs a scalar name: {how_to}")
    step, _, scalar = target.strip().rpartition("#")
    step = step or step_names[-1]
    if step not in step_names:
        raise SpecError(
            f"'{key}' names step '{step}', which is not in steps "
            f"({', '.join(step_names)})"
        )
    if not scalar:
        raise SpecError(f"'{key}' {mode} needs a scalar name: {how_to}")
    return Objective(scalar=scalar, mode=mode, step=step)
