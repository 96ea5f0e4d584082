"""The Ray cluster a tune runs on, from its `cluster` flag.

`local` is an embedded Ray started for this tune and stopped at its end. Any
other name is a Guild remote of type `ray-cluster` in the user's Guild config
(see `gpkg_ray.remote.config`): it must exist and answer before anything runs.
The remote's config is read once per tune (`resolve_cluster`); the rest takes
the config.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
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


def check_cluster(cluster: ClusterConfig | None, cpus: float, gpus: float) -> None:
    """Raises ClusterError when `cluster` cannot run trials now, or could never
    run one that needs `cpus` and `gpus` (a trial runs on one node). For the
    embedded Ray, only CPUs (this machine's count is the most it could have;
    its GPUs are known once it is up, Ray's own count, see engine.driver),
    and its auth must be token auth or asked off (see engine.local_ray)."""
    if cluster is None:
        from gpkg_ray.engine.local_ray import local_auth_mode  # imports no Ray

        local_auth_mode()
        _check_local_cpus(cpus)
        return
    from gpkg_ray.remote.status import ClusterDown, cluster_nodes

    try:
        nodes = cluster_nodes(cluster)
    except ClusterDown as e:
        raise ClusterError(f"cluster '{cluster.name}' is down: {e}") from e
    alive = [(n.amount("CPU")[0], n.amount("GPU")[0]) for n in nodes if n.alive]
    if not any(node_cpus > 0 for node_cpus, _ in alive):
        raise ClusterError(
            f"cluster '{cluster.name}' has no node with CPUs to run trials on"
        )
    check_trial_fits(cpus, gpus, alive, f"cluster '{cluster.name}'")


def _check_local_cpus(cpus: float) -> None:
    machine = float(os.cpu_count() or 1)
    if cpus > machine:
        raise ClusterError(
            f"a trial needs cpus={cpus:g}, more than this machine has ({machine:g} "
            "CPUs): set the cpus flag lower, or use a cluster with bigger nodes"
        )


def check_trial_fits(
    cpus: float, gpus: float, nodes: Sequence[tuple[float, float]], where: str
) -> None:
    """Raises ClusterError unless one of `nodes` ((CPUs, GPUs) in all) can hold
    a trial: Ray would otherwise wait for such a node forever, and say so only
    in its log."""
    if any(cpus <= node_cpus and gpus <= node_gpus for node_cpus, node_gpus in nodes):
        return
    most_cpus = max((c for c, _ in nodes), default=0)
    most_gpus = max((g for _, g in nodes), default=0)
    raise ClusterError(
        f"a trial needs cpus={cpus:g} gpus={gpus:g} on one node, more than "
        f"{where} has (at most {most_cpus:g} CPUs, {most_gpus:g} GPUs on a node): "
        "set the cpus and gpus flags lower, or use a cluster with bigger nodes"
    )
