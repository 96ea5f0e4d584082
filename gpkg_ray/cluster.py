"""The Ray cluster a tune runs on, from its `cluster` flag.

`local` is an embedded Ray started for this tune and stopped at its end. Any
other name is a Guild remote of type `ray-cluster` in the user's Guild config
(see `gpkg_ray.remote.config`): it must exist and answer before anything runs.
"""

from __future__ import annotations

from gpkg_ray.errors import ClusterError

LOCAL = "local"


def check_cluster(name: str) -> str:
    """Returns the cluster name if it can be used; raises ClusterError otherwise."""
    if name == LOCAL:
        return name
    from gpkg_ray.remote.config import cluster_for_name
    from gpkg_ray.remote.status import ClusterDown, cluster_nodes

    cluster = cluster_for_name(name)
    try:
        nodes = cluster_nodes(cluster)
    except ClusterDown as e:
        raise ClusterError(f"cluster '{name}' is down: {e}") from e
    if not any(n.alive and n.amount("CPU")[0] > 0 for n in nodes):
        raise ClusterError(f"cluster '{name}' has no node with CPUs to run trials on")
    raise ClusterError(
        f"cluster '{name}' is up ({len(nodes)} nodes), but this version of "
        "gpkg.ray runs trials on cluster=local only: running them on a "
        "ray-cluster remote comes next"
    )
