"""Checks shared by a ray-cluster remote's mapping keys (`local:`, `slurm:`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpkg_ray.errors import ClusterError


def check_mapping(remote: str, key: str, raw: Any, allowed: tuple[str, ...]) -> None:
    """Raises ClusterError unless `raw`, remote `remote`'s value of `key`, is a
    mapping of keys in `allowed` only."""
    if not isinstance(raw, Mapping):
        raise ClusterError(
            f"remote '{remote}': {key} must be a mapping of {', '.join(allowed)}"
        )
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ClusterError(
            f"remote '{remote}': unknown key '{key}: {unknown[0]}' ({key} takes "
            f"{', '.join(allowed)})"
        )
