"""The objective: which scalar of which step a search maximizes or minimizes."""

from __future__ import annotations

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
        if than is None:
            return True
        return value > than if self.mode == "max" else value < than


def parse_objective(raw: Any, step_names: list[str]) -> Objective:
    """Objective from op config `optimize`; the step defaults to the last one."""
    if raw is None:
        raise SpecError(f"config has no 'optimize': {_HOW_TO}")
    entries = raw if isinstance(raw, list) else [raw]
    if len(entries) != 1:
        raise SpecError(
            f"'optimize' lists {len(entries)} objectives; one is supported: {_HOW_TO}"
        )
    entry = entries[0]
    if not isinstance(entry, dict) or len(entry) != 1:
        raise SpecError(f"malformed 'optimize' entry {entry!r}: {_HOW_TO}")
    ((mode, target),) = entry.items()
    if mode not in ("max", "min"):
        raise SpecError(f"'optimize' uses '{mode}': {_HOW_TO}")
    if not isinstance(target, str) or not target.strip():
        raise SpecError(f"'optimize' {mode} needs a scalar name: {_HOW_TO}")
    step, _, scalar = target.strip().rpartition("#")
    step = step or step_names[-1]
    if step not in step_names:
        raise SpecError(
            f"'optimize' names step '{step}', which is not in steps "
            f"({', '.join(step_names)})"
        )
    if not scalar:
        raise SpecError(f"'optimize' {mode} needs a scalar name: {_HOW_TO}")
    return Objective(scalar=scalar, mode=mode, step=step)
