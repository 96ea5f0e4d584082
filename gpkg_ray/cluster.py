"""The Ray cluster a tune runs on, from its `cluster` flag.

`local` is an embedded Ray started for this tune and stopped at its end. Any
other name is a Guild remote of type `ray-cluster` in the user's Guild config
(GUILD_CONFIG, ./guild-config.yml or ~/.guild/config.yml).
"""

from __future__ import annotations

from gpkg_ray.errors import ClusterError

LOCAL = "local"
REMOTE_TYPE = "ray-cluster"


def check_cluster(name: str) -> str:
    """Returns the cluster name if it can be used; raises ClusterError otherwise."""
    if name == LOCAL:
        return name
    from guild import config

    remotes = config.user_config().get("remotes") or {}
    clusters = sorted(
        n for n, r in remotes.items() if (r or {}).get("type") == REMOTE_TYPE
    )
    if name not in remotes:
        defined = ", ".join(clusters) or "none"
        raise ClusterError(
            f"unknown cluster '{name}': use cluster=local, or define a remote "
            f"'{name}' of type {REMOTE_TYPE} in your Guild config "
            f"(ray-cluster remotes defined: {defined})"
        )
    remote_type = (remotes[name] or {}).get("type")
    if remote_type != REMOTE_TYPE:
        raise ClusterError(
            f"remote '{name}' is of type '{remote_type}', not {REMOTE_TYPE}: "
            f"use cluster=local or a {REMOTE_TYPE} remote"
        )
    raise ClusterError(
        f"cluster '{name}': this version of gpkg.ray runs trials on cluster=local "
        "only; ray-cluster remotes are not supported yet"
    )
