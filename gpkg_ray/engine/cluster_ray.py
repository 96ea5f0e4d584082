"""Joining a `ray-cluster` remote as this tune's driver.

- The driver runs on a node of the cluster (its head, or a node started with
  `ray start --address`): Ray drivers talk to their own node's raylet.
- The project source the steps need (`remote.source`) is the job's working dir
  (Ray's runtime_env): every node gets it before a trial starts there.
- With the remote's token (Ray's token auth), passed in this process's
  environment only: nothing is written to ~/.ray.
- A cluster on a loopback address keeps the driver on loopback too.
- Before the first trial, each node's Guild home of the tune is cleared of
  what an earlier attempt left (`prepare_node_homes`).
- Leaving only disconnects (`ray.shutdown()`): the cluster keeps running; the
  tune's Guild homes on the nodes are removed first (`remove_node_homes`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.engine.local_ray import (
    check_ray_not_imported,
    ray_logs_to,
    reload_ray_config,
)
from gpkg_ray.environ import patched_environ
from gpkg_ray.errors import ClusterError
from gpkg_ray.remote.batch_proto import BatchProto, pack_proto, remove_protos
from gpkg_ray.remote.config import ClusterConfig
from gpkg_ray.upstream import UpstreamBundle, pack, remove_installed


@dataclass(frozen=True)
class ClusterRuns:
    """How a trial on a cluster's node brings its runs home (`remote.run_sync`)."""

    collector: Any
    """The RunCollector actor on the driver's node."""
    tune_run_id: str
    max_copy_bytes: int
    upstream: UpstreamBundle | None = None
    """Runs from outside the trial its steps require, for each node's Guild
    home of the tune (see gpkg_ray.upstream)."""
    batch: BatchProto | None = None
    """A Guild batch's proto, which its trial runs are made from on the
    nodes (see remote.batch_proto)."""


def driver_env(cluster: ClusterConfig, token: str | None) -> dict[str, str]:
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if cluster.is_loopback:
        # Ray on Linux would advertise the host's address, which a loopback
        # cluster's nodes do not listen on.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


@contextmanager
def joined_cluster(
    cluster: ClusterConfig, source_dir: str, log_file: str | None = None
) -> Iterator[None]:
    """Connects this process to `cluster` with `source_dir` as the job's
    working dir; disconnects on exit."""
    token = cluster.auth_token()
    if cluster.is_loopback:
        check_ray_not_imported()
    with (
        patched_environ(driver_env(cluster, token), unset=["RAY_ADDRESS"]),
        ray_logs_to(log_file) as route_logs,
    ):
        reload_ray_config()
        try:
            _connect(cluster, source_dir)
            route_logs()  # ray.init drops the handlers of Ray's logger
            yield
        finally:
            import ray

            ray.shutdown()
            reload_ray_config()


def _connect(cluster: ClusterConfig, source_dir: str) -> None:
    import ray

    try:
        ray.init(
            address=cluster.address,
            runtime_env=_runtime_env(cluster, source_dir),
            log_to_driver=False,
            configure_logging=False,
        )
    except Exception as e:
        lines = str(e).strip().splitlines()
        reason = lines[0] if lines else type(e).__name__
        raise ClusterError(
            f"cannot join cluster '{cluster.name}' at {cluster.address}: {reason} "
            "(run the tune on a node of the cluster, e.g. its head)"
        ) from e


@contextmanager
def cluster_session(
    cluster: ClusterConfig,
    step_opdefs: Iterable,
    guild_home: str,
    tune_run_id: str,
    log_file: str | None = None,
    upstream_ids: tuple[str, ...] = (),
    project_dir: str | None = None,
    batch_dir: str | None = None,
) -> Iterator[ClusterRuns]:
    """Joins `cluster` with the steps' source and a collector for their runs
    (written as runs of `project_dir`), and the runs `upstream_ids` of
    GUILD_HOME packed for the nodes; for a Guild batch (the batch run at
    `batch_dir`), its proto packed for the nodes, and its trial runs linked
    from it as they come home. On exit, closes runs left open, removes the
    tune's files on the nodes, and leaves the cluster."""
    from gpkg_ray.remote.source import stage_source

    source_dir = tempfile.mkdtemp(prefix="gpkg-ray-source-")
    try:
        stage_source(step_opdefs, source_dir)
        with joined_cluster(cluster, source_dir, log_file):
            import ray

            collector = start_collector(
                guild_home, cluster.name, project_dir, batch_dir
            )
            prepare_node_homes(tune_run_id)
            bundle = None
            if upstream_ids:
                packed = ray.put(pack(guild_home, list(upstream_ids)))
                bundle = UpstreamBundle(tuple(upstream_ids), packed)
            batch = None
            if batch_dir is not None:
                batch_id = os.path.basename(os.path.normpath(batch_dir))
                batch = BatchProto(batch_id, ray.put(pack_proto(batch_dir)))
            try:
                yield ClusterRuns(
                    collector,
                    tune_run_id,
                    int(cluster.max_copy_mb * 2**20),
                    bundle,
                    batch,
                )
            finally:
                ray.get(collector.close_all.remote(LOST_AT_END))
                ray.kill(collector)
                remove_node_homes(tune_run_id, tuple(upstream_ids))
    finally:
        shutil.rmtree(source_dir, ignore_errors=True)


LOST_AT_END = "the tune ended before its node sent the run's end"


def _runtime_env(cluster: ClusterConfig, source_dir: str) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": source_dir}
    if cluster.env:
        env["env_vars"] = dict(cluster.env)
    if cluster.pip:
        env["pip"] = list(cluster.pip)
    return env


def start_collector(
    guild_home: str,
    cluster_name: str,
    project_dir: str | None,
    batch_dir: str | None = None,
):
    """The RunCollector actor, on this driver's node (where GUILD_HOME is)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from gpkg_ray.remote.run_sync import RunCollector

    here = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(RunCollector)
        .options(
            num_cpus=0,
            # One write at a time per run, in the order the nodes send them.
            max_concurrency=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        )
        .remote(guild_home, cluster_name, project_dir, batch_dir)
    )


def prepare_node_homes(tune_run_id: str) -> None:
    """Clears the tune's Guild home on each live node of what an earlier
    attempt of the tune left there (see `remote.run_sync.clear_node_home`)."""
    from gpkg_ray.remote.run_sync import clear_node_home

    _on_each_node(clear_node_home, tune_run_id)


def remove_node_homes(tune_run_id: str, upstream_ids: tuple[str, ...] = ()) -> None:
    """Removes the tune's Guild home on each live node (with the required runs
    it was sent), unless runs with files left on the node are in it (see
    `remote.run_sync`)."""
    _on_each_node(_remove_node_home, tune_run_id, upstream_ids)


def _on_each_node(func, *args) -> None:
    """Runs `func(*args)` on each live node; waits up to 30 s."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0)(func)
    pending = [
        remote.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                node["NodeID"], soft=False
            )
        ).remote(*args)
        for node in ray.nodes()
        if node["Alive"]
    ]
    ray.wait(pending, num_returns=len(pending), timeout=30)


def _remove_node_home(tune_run_id: str, upstream_ids: tuple[str, ...] = ()) -> None:
    from gpkg_ray.remote.run_sync import node_home_path

    home = node_home_path(tune_run_id)
    remove_installed(home, upstream_ids)
    remove_protos(home)
    runs = guild_api.runs_dir(home)
    if not os.path.isdir(runs) or not os.listdir(runs):
        shutil.rmtree(home, ignore_errors=True)
