"""The Ray cluster a tune runs on, from its `cluster` flag.

`local` is an embedded Ray started for this tune and stopped at its end. Any
other name is a Guild remote of type `ray-cluster` in the user's Guild config
(see `gpkg_ray.remote.config`): it must exist and answer before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from gpkg_ray.errors import ClusterError

if TYPE_CHECKING:
    from gpkg_ray.tuning_spec.settings import Settings

LOCAL = "local"


def check_cluster(name: str) -> None:
    """Raises ClusterError when cluster `name` cannot be used."""
    if name == LOCAL:
        return
    from gpkg_ray.remote.config import cluster_for_name
    from gpkg_ray.remote.status import ClusterDown, cluster_nodes

    cluster = cluster_for_name(name)
    try:
        nodes = cluster_nodes(cluster)
    except ClusterDown as e:
        raise ClusterError(f"cluster '{name}' is down: {e}") from e
    if not any(n.alive and n.amount("CPU")[0] > 0 for n in nodes):
        raise ClusterError(f"cluster '{name}' has no node with CPUs to run trials on")


def with_cluster_defaults(settings: Settings, user_flags: Iterable[str]) -> Settings:
    """`settings` with the cluster remote's per-trial resources (`trial-cpus`,
    `trial-gpus`) in place of the `cpus` and `gpus` flags the user left out."""
    if settings.cluster == LOCAL:
        return settings
    from gpkg_ray.remote.config import cluster_for_name

    cluster = cluster_for_name(settings.cluster)
    defaults = {"cpus": cluster.trial_cpus, "gpus": cluster.trial_gpus}
    return replace(
        settings,
        **{
            flag: value
            for flag, value in defaults.items()
            if value is not None and flag not in user_flags
        },
    )
