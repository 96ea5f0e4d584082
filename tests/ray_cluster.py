"""A real multi-node Ray cluster on 127.0.0.1, for tests: a head with no CPUs
and one worker node with 2 CPUs and its own TMPDIR and HOME.

Run as a script (so the tests' own process never imports Ray with cluster
settings): prints one JSON line {"address": ..., "worker": NODE_ID} when the
cluster is up, then takes commands, a line each, and answers each with a JSON
line:

- `add DIR`: adds a worker node (2 CPUs, DIR as its TMPDIR and HOME);
  answers {"worker": NODE_ID};
- `kill NODE_ID`: kills that worker node, as a machine that dies would go
  (no graceful shutdown); answers {"killed": NODE_ID}.

It shuts the cluster down when its stdin closes. With GPKG_RAY_TEST_TOKEN set,
the cluster uses Ray's token auth with that token.

Its nodes start lean, as the embedded Ray does (local_ray.lean_node: no
dashboard API server, autoscaler monitor or log monitor, minimal agents;
nothing of a tune on a cluster uses them), and its head notices a node that
died within about 3 s (HEALTH_CHECKS) rather than Ray's 15: a test that
kills a node waits for that, not for what gpkg.ray does about it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile

from gpkg_ray.engine.local_ray import lean_node
from gpkg_ray.remote.local_cluster_main import keep_ray_address_file_in

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
if os.getenv("GPKG_RAY_TEST_TOKEN"):
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = os.environ["GPKG_RAY_TEST_TOKEN"]

HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
"""The head's checks of its nodes (RayConfig keys, checked by
tests/test_local_ray.py): a node is dead after 3 failed checks a second apart,
not Ray's 5 three seconds apart. A check fails at once only where nothing
answers (a killed raylet); a busy one has Ray's 10 s timeout per check."""


def main(worker_dir: str) -> None:
    # Ray's files go to a temp dir of the cluster's own, not the machine's
    # shared /tmp/ray; a short one, since Ray puts sockets in it.
    temp_dir = tempfile.mkdtemp(prefix="gpkg-ray-cluster-")
    keep_ray_address_file_in(temp_dir)
    try:
        run_cluster(temp_dir, worker_dir)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_cluster(temp_dir: str, worker_dir: str) -> None:
    from ray.cluster_utils import Cluster

    with lean_node():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                "temp_dir": temp_dir,
                "_system_config": HEALTH_CHECKS,
            },
        )
    try:
        workers = [add_worker(cluster, temp_dir, worker_dir)]
        answer({"address": cluster.address, "worker": workers[0].node_id})
        for line in sys.stdin:  # until the test closes it
            command, _, arg = line.strip().partition(" ")
            if command == "add":
                workers.append(add_worker(cluster, temp_dir, arg))
                answer({"worker": workers[-1].node_id})
            elif command == "kill":
                (killed,) = [w for w in workers if w.node_id == arg]
                workers.remove(killed)
                kill_node(cluster, killed)
                answer({"killed": killed.node_id})
    finally:
        cluster.shutdown()


def add_worker(cluster, temp_dir: str, worker_dir: str):
    with lean_node():
        worker = cluster.add_node(
            num_cpus=2,
            temp_dir=temp_dir,
            env_vars={"TMPDIR": worker_dir, "HOME": worker_dir},
        )
    cluster.wait_for_nodes()
    return worker


def kill_node(cluster, node) -> None:
    """Ends a node as a machine that dies would: Ray's processes of the node
    and everything they started (its workers, and their `guild run`s)."""
    import psutil

    (raylet,) = node.all_processes["raylet"]
    tree = psutil.Process(raylet.process.pid).children(recursive=True)
    cluster.remove_node(node, allow_graceful=False)
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def answer(reply: dict) -> None:
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
