"""A `ray-cluster` remote's config, from the user's Guild config
(GUILD_CONFIG, ./guild-config.yml or ~/.guild/config.yml):

    remotes:
      geronimo:
        type: ray-cluster
        description: the lab's Ray cluster
        address: 10.0.0.5:6379                  # the head node's GCS address
        auth-token-file: ~/.ray/geronimo.token  # when the cluster uses token auth
        # or auth-token-env: GERONIMO_RAY_TOKEN
        max-copy-mb: 256     # bigger run files stay on the node (see run_sync)
        env: {DATA_DIR: /data/fashion}   # for the steps, on every node
        pip: [scikit-learn==1.5.2]       # installed on the nodes by Ray
        trial-cpus: 4        # per trial, unless the tune's cpus/gpus flags say
        trial-gpus: 1
        # local: {workers: 2, cpus: 2}  # a cluster Guild starts here (local_cluster)
        # slurm: {nodes: 2, time: "4:00:00"}  # or in a SLURM job (remote.slurm);
        #                                     # then no address: the job's head

Every key is checked when the remote is used; a bad one is a one-line error
that names the remote and the key.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.errors import ClusterError
from gpkg_ray.remote import local_cluster
from gpkg_ray.remote.local_cluster import LocalSpec, local_spec
from gpkg_ray.remote.slurm import SlurmSpec, slurm_spec

REMOTE_TYPE = "ray-cluster"
KEYS = (
    "type",
    "description",
    "address",
    "auth-token-file",
    "auth-token-env",
    "max-copy-mb",
    "env",
    "pip",
    "trial-cpus",
    "trial-gpus",
    "local",
    "slurm",
)
DEFAULT_MAX_COPY_MB = 256


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    host: str
    port: int
    auth_token_file: str | None = None
    auth_token_env: str | None = None
    max_copy_mb: float = DEFAULT_MAX_COPY_MB
    env: tuple[tuple[str, str], ...] = ()
    """Environment variables of the job on the cluster: the steps get them."""
    pip: tuple[str, ...] = ()
    """Requirements Ray installs on the nodes (runtime_env `pip`)."""
    trial_cpus: float | None = None
    trial_gpus: float | None = None
    local: LocalSpec | None = None
    """How to start the cluster here (`guild remote start`), if it is local."""
    slurm: SlurmSpec | None = None
    """The SLURM job `guild remote start` submits for it, if any."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return _is_loopback(self.host)

    def auth_token(self) -> str | None:
        """The cluster's token (Ray's token auth), or None when none is set."""
        if self.auth_token_file:
            path = self.auth_token_file
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
        if self.local is not None or self.slurm is not None:
            # `guild remote start` made one
            return _read_if_exists(local_cluster.token_file(self.name))
        return None


def _read_if_exists(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def defined_remotes() -> dict[str, Any]:
    return guild_api.user_remotes()


def cluster_for_name(name: str) -> ClusterConfig:
    """The `ray-cluster` remote `name`; raises ClusterError (listing the
    ray-cluster remotes defined) when there is none by that name."""
    from gpkg_ray.remote import remotes_cluster

    remotes = defined_remotes()
    types = (REMOTE_TYPE, remotes_cluster.REMOTE_TYPE)
    clusters = sorted(n for n, r in remotes.items() if (r or {}).get("type") in types)
    if name not in remotes:
        raise ClusterError(
            f"unknown cluster '{name}': use cluster=local, or define a remote "
            f"'{name}' of type {REMOTE_TYPE} in your Guild config "
            f"(ray-cluster remotes defined: {', '.join(clusters) or 'none'})"
        )
    remote_type = (remotes[name] or {}).get("type")
    if remote_type == remotes_cluster.REMOTE_TYPE:
        # Checked whole (its members too), then read as the ray-cluster it is.
        remotes_cluster.remotes_cluster(name, remotes[name], remotes)
        return cluster_config(
            name, remotes_cluster.cluster_config_raw(name, remotes[name])
        )
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
    slurm = None
    if raw.get("slurm") is not None:
        slurm = slurm_spec(name, raw["slurm"])
        if raw.get("address") or raw.get("local") is not None:
            raise ClusterError(
                f"remote '{name}': a slurm remote's head is its job's first node: "
                "remove address and local (set slurm: port for the head's port)"
            )
        host, port = slurm_address(name, slurm)
    else:
        host, port = _address(name, raw.get("address"))
    token_file, token_env = raw.get("auth-token-file"), raw.get("auth-token-env")
    if token_file and token_env:
        raise ClusterError(
            f"remote '{name}': give auth-token-file or auth-token-env, not both"
        )
    max_copy_mb = _number(
        name,
        raw,
        "max-copy-mb",
        what="a finite number of MB",
        hint=" (files of a run bigger than that stay on the node)",
    )
    local = None
    if raw.get("local") is not None:
        local = local_spec(name, raw["local"])
        if not _is_loopback(host):
            raise ClusterError(
                f"remote '{name}': a local cluster listens on 127.0.0.1 only: set "
                f"its address to 127.0.0.1:PORT, not {host}:{port}"
            )
    return ClusterConfig(
        name,
        host,
        port,
        _token_file(token_file),
        token_env,
        DEFAULT_MAX_COPY_MB if max_copy_mb is None else max_copy_mb,
        _env(name, raw.get("env")),
        _pip(name, raw.get("pip")),
        _number(name, raw, "trial-cpus"),
        _number(name, raw, "trial-gpus"),
        local,
        slurm,
    )


def slurm_address(name: str, spec: SlurmSpec) -> tuple[str, int]:
    """The head's address that `guild remote start` recorded (127.0.0.1
    before the job runs: nothing listens there for it, and status says why)."""
    from gpkg_ray.remote import slurm

    host, port = slurm.address(name, spec)
    return host or "127.0.0.1", port


def _token_file(raw: Any) -> str | None:
    """`auth-token-file` as an absolute path: a relative one is taken from
    where the user ran the command, in the `guild run` that checks the tune
    and in its tuner (which runs in the run dir) alike."""
    if not raw:
        return None
    path = os.path.expanduser(str(raw))
    return os.path.normpath(os.path.join(guild_api.config_cwd(), path))


def _env(name: str, raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in raw.items()
    ):
        raise ClusterError(
            f"remote '{name}': env must map variable names to values, e.g. "
            "`env: {DATA_DIR: /data}`"
        )
    return tuple((k, str(v)) for k, v in raw.items())


def _pip(name: str, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise ClusterError(
            f"remote '{name}': pip must be a list of requirements, e.g. "
            "`pip: [scikit-learn==1.5.2]`"
        )
    return tuple(raw)


def _number(
    name: str,
    raw: Mapping[str, Any],
    key: str,
    what: str = "a finite number",
    hint: str = "",
) -> float | None:
    """The value of `key` (a finite number >= 0: YAML reads `.inf` and `.nan`
    as floats), or None when it is not given."""
    value = raw.get(key)
    if value is None:
        return None
    if not is_finite_number(value) or value < 0:
        raise ClusterError(
            f"remote '{name}': {key} must be {what} >= 0, not '{value}'{hint}"
        )
    return float(value)


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
