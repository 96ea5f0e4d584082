"""A `ray-cluster` remote's config, from the user's Guild config
(GUILD_CONFIG, ./guild-config.yml or ~/.guild/config.yml):

    remotes:
      geronimo:
        type: ray-cluster
        description: the lab's Ray cluster
        address: 10.0.0.5:6379                  # the head node's GCS address
        auth-token-file: ~/.ray/geronimo.token  # when the cluster uses token auth
        # or auth-token-env: GERONIMO_RAY_TOKEN

Every key is checked when the remote is used; a bad one is a one-line error
that names the remote and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpkg_ray.errors import ClusterError

REMOTE_TYPE = "ray-cluster"
KEYS = ("type", "description", "address", "auth-token-file", "auth-token-env")


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    host: str
    port: int
    auth_token_file: str | None = None
    auth_token_env: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def auth_token(self) -> str | None:
        """The cluster's token (Ray's token auth), or None when none is set."""
        if self.auth_token_file:
            path = os.path.expanduser(self.auth_token_file)
            try:
                with open(path) as f:
                    token = f.read().strip()
            except OSError as e:
                raise ClusterError(
                    f"remote '{self.name}': cannot read auth-token-file {path} "
                    f"({e.strerror}): copy the cluster's token there"
                ) from e
            if not token:
                raise ClusterError(
                    f"remote '{self.name}': auth-token-file {path} is empty"
                )
            return token
        if self.auth_token_env:
            token = os.getenv(self.auth_token_env, "").strip()
            if not token:
                raise ClusterError(
                    f"remote '{self.name}': auth-token-env names "
                    f"{self.auth_token_env}, which is not set: export the "
                    "cluster's token in it"
                )
            return token
        return None


def defined_remotes() -> dict[str, Any]:
    from guild import config

    return config.user_config().get("remotes") or {}


def cluster_for_name(name: str) -> ClusterConfig:
    """The `ray-cluster` remote `name`; raises ClusterError (listing the
    ray-cluster remotes defined) when there is none by that name."""
    remotes = defined_remotes()
    clusters = sorted(
        n for n, r in remotes.items() if (r or {}).get("type") == REMOTE_TYPE
    )
    if name not in remotes:
        raise ClusterError(
            f"unknown cluster '{name}': use cluster=local, or define a remote "
            f"'{name}' of type {REMOTE_TYPE} in your Guild config "
            f"(ray-cluster remotes defined: {', '.join(clusters) or 'none'})"
        )
    remote_type = (remotes[name] or {}).get("type")
    if remote_type != REMOTE_TYPE:
        raise ClusterError(
            f"remote '{name}' is of type '{remote_type}', not {REMOTE_TYPE}: "
            f"use cluster=local or a {REMOTE_TYPE} remote"
        )
    return cluster_config(name, remotes[name])


def cluster_config(name: str, raw: Mapping[str, Any]) -> ClusterConfig:
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ClusterError(
            f"remote '{name}': unknown key '{unknown[0]}' (a {REMOTE_TYPE} remote "
            f"takes {', '.join(KEYS)})"
        )
    host, port = _address(name, raw.get("address"))
    token_file, token_env = raw.get("auth-token-file"), raw.get("auth-token-env")
    if token_file and token_env:
        raise ClusterError(
            f"remote '{name}': give auth-token-file or auth-token-env, not both"
        )
    return ClusterConfig(name, host, port, token_file, token_env)


def _address(name: str, raw: Any) -> tuple[str, int]:
    how_to = "give the head node's GCS address, e.g. `address: 10.0.0.5:6379`"
    if not raw or not isinstance(raw, str):
        raise ClusterError(f"remote '{name}' has no address: {how_to}")
    if "://" in raw:
        raise ClusterError(
            f"remote '{name}': address {raw} is a URL (Ray Client is not "
            f"supported): {how_to}"
        )
    host, _, port = raw.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(
            f"remote '{name}': address '{raw}' is not HOST:PORT: {how_to}"
        )
    return host, int(port)
