"""The Ray cluster a tune runs on, from its `cluster` flag.

`local` is an embedded Ray started for this tune and stopped at its end. Any
other name is a Guild remote of type `ray-cluster` in the user's Guild config
(see `gpkg_ray.remote.config`): it must exist and answer before anything runs.
The remote's config is read once per tune (`resolve_cluster`); the rest takes
the config.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from gpkg_ray.errors import ClusterError

if TYPE_CHECKING:
    from gpkg_ray.remote.config import ClusterConfig

LOCAL = "local"


def resolve_cluster(name: str) -> ClusterConfig | None:
    """The ray-cluster remote `name` (the `cluster` flag), None for `local`;
    raises ClusterError for a remote that is not defined or is misconfigured."""
    if name == LOCAL:
        return None
    from gpkg_ray.remote.config import cluster_for_name

    return cluster_for_name(name)


def cluster_defaults(
    cluster: ClusterConfig | None, user_flags: Iterable[str]
) -> dict[str, float]:
    """The remote's per-trial resources (`trial-cpus`, `trial-gpus`) as values
    of the `cpus` and `gpus` flags the user left out."""
    if cluster is None:
        return {}
    defaults = {"cpus": cluster.trial_cpus, "gpus": cluster.trial_gpus}
    return {
        flag: value
        for flag, value in defaults.items()
        if value is not None and flag not in user_flags
    }


def check_cluster(cluster: ClusterConfig | None) -> None:
    """Raises ClusterError when `cluster` cannot run trials now."""
    if cluster is None:
        return
    from gpkg_ray.remote.status import ClusterDown, cluster_nodes

    try:
        nodes = cluster_nodes(cluster)
    except ClusterDown as e:
        raise ClusterError(f"cluster '{cluster.name}' is down: {e}") from e
    if not any(n.alive and n.amount("CPU")[0] > 0 for n in nodes):
        raise ClusterError(
            f"cluster '{cluster.name}' has no node with CPUs to run trials on"
        )
