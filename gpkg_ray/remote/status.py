"""What a Ray cluster holds: its nodes, with CPUs and GPUs total and free.

Reaching it is checked first with a plain TCP connect (a few seconds at most),
then its GCS is asked for its nodes by `probe` in a subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

from gpkg_ray.errors import ClusterError
from gpkg_ray.remote.config import ClusterConfig

CONNECT_TIMEOUT = 3.0
PROBE_TIMEOUT = 30.0
HEAD_RESOURCE = "node:__internal_head__"


class ClusterDown(ClusterError):
    """Nothing answers at the cluster's address."""


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    address: str
    status: str
    """Ray's node status: RUNNING (has work), IDLE, DEAD, ..."""
    total: dict[str, float]
    available: dict[str, float]

    @property
    def is_head(self) -> bool:
        return HEAD_RESOURCE in self.total

    @property
    def alive(self) -> bool:
        return self.status != "DEAD"

    def amount(self, resource: str) -> tuple[float, float]:
        """(total, free) of a resource."""
        return self.total.get(resource, 0.0), self.available.get(resource, 0.0)


def cluster_nodes(cluster: ClusterConfig) -> list[NodeStatus]:
    """The cluster's nodes, dead ones included; raises ClusterDown or
    ClusterError with a one-line message."""
    if cluster.slurm is not None:
        check_job_running(cluster)
        try:
            return _cluster_nodes(cluster)
        except ClusterDown:
            # The job may have ended while Ray was asked (its time limit):
            # say that rather than a GCS that does not answer.
            check_job_running(cluster)
            raise
    return _cluster_nodes(cluster)


def _cluster_nodes(cluster: ClusterConfig) -> list[NodeStatus]:
    token = cluster.auth_token()  # a config error comes before any connection
    check_reachable(cluster)
    env = {
        **os.environ,
        # Ray on Linux would otherwise rewrite 127.0.0.1 to the host's address.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Fail in seconds, not Ray's 60, when the port is not a GCS.
        "RAY_py_gcs_connect_timeout_s": "10",
        "RAY_gcs_rpc_server_connect_timeout_s": "5",
    }
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gpkg_ray.remote.probe", cluster.address],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as e:
        raise ClusterDown(
            f"{cluster.address} did not answer as a Ray GCS in {PROBE_TIMEOUT:g} s"
        ) from e
    reply = _reply(done)
    if "InvalidAuthToken" in reply.get("error", ""):
        given = "refused the token given" if token else "needs a token"
        raise ClusterError(
            f"remote '{cluster.name}': {cluster.address} {given} (Ray token auth): "
            "set auth-token-file or auth-token-env to the cluster's token"
        )
    if "error" in reply:
        raise ClusterDown(
            f"{cluster.address} is not a Ray GCS we can read ({reply['error']})"
        )
    return [NodeStatus(**node) for node in reply["nodes"]]


def _reply(done: subprocess.CompletedProcess) -> dict:
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"probe exited {done.returncode}: {tail}"}


def check_job_running(cluster: ClusterConfig) -> None:
    """Raises ClusterDown unless the SLURM job of a slurm remote runs: how it
    ended (TIMEOUT: its time limit), or that it is queued or not started."""
    from gpkg_ray.remote import slurm

    job = slurm.current_job(cluster.name)
    if job is None:
        raise ClusterDown(
            f"no SLURM job: start one with `guild remote start {cluster.name}`"
        )
    if job.ended:
        raise ClusterDown(
            f"{job.describe()}: start a new allocation with "
            f"`guild remote start {cluster.name}`"
        )
    if job.state != "RUNNING":
        raise ClusterDown(f"{job.describe()}: Ray is not up yet")


def check_reachable(cluster: ClusterConfig) -> None:
    try:
        with socket.create_connection(
            (cluster.host, cluster.port), timeout=CONNECT_TIMEOUT
        ):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        hint = (
            f"start it with `guild remote start {cluster.name}`"
            if cluster.local is not None
            else "is the cluster's head node running there?"
        )
        raise ClusterDown(f"cannot reach {cluster.address} ({reason}): {hint}") from e


def status_lines(cluster: ClusterConfig, nodes: list[NodeStatus]) -> list[str]:
    """A header, then one row per node: id, address, CPUs and GPUs total/free."""
    alive = [n for n in nodes if n.alive]
    cpus = sum(n.amount("CPU")[0] for n in alive)
    free = sum(n.amount("CPU")[1] for n in alive)
    lines = [
        f"{cluster.name}: Ray cluster at {cluster.address}, {len(alive)} "
        f"node{'s' if len(alive) != 1 else ''} up, {free:g}/{cpus:g} CPUs free"
    ]
    rows = [["node", "address", "status", "CPUs", "free", "GPUs", "free", "role"]]
    for node in sorted(nodes, key=lambda n: (not n.is_head, n.node_id)):
        (cpu, cpu_free), (gpu, gpu_free) = node.amount("CPU"), node.amount("GPU")
        role = "head" if node.is_head else "worker"
        rows.append(
            [
                node.node_id[:8],
                node.address,
                node.status.lower(),
                f"{cpu:g}",
                f"{cpu_free:g}",
                f"{gpu:g}",
                f"{gpu_free:g}",
                role,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += [
        "  "
        + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return lines
