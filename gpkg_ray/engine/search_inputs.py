"""What a search starts from, as plain data: the searchers take it as Ray's
searchers take `points_to_evaluate`. Imports no Ray (the preparation builds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpkg_ray.trial.outcome import TrialOutcome


@dataclass(frozen=True)
class SearchInputs:
    """What a search starts from, as plain data (all of it for a tune's first
    attempt): the searchers take it as Ray's take `points_to_evaluate`."""

    trials: int
    """Trials to start (interrupted ones to run again included)."""
    rerun: tuple[dict[str, Any], ...] = ()
    """Values of interrupted trials, to run first (by space key)."""
    ended: tuple[dict[str, Any], ...] = ()
    """Values of trials that ended in earlier attempts: a grid skips them."""
    told: tuple[TrialOutcome, ...] = ()
    """Trials a model-based searcher learns from before it suggests any: those
    that ended in earlier attempts, and warm-start trials."""
