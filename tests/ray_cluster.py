"""A real multi-node Ray cluster on 127.0.0.1, for tests: a head with no CPUs
and one worker node with 2 CPUs and its own TMPDIR and HOME.

Run as a script (so the tests' own process never imports Ray with cluster
settings): prints one JSON line {"address": ...} when the cluster is up, then
shuts it down when its stdin closes. With GPKG_RAY_TEST_TOKEN set, the cluster
uses Ray's token auth with that token.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
if os.getenv("GPKG_RAY_TEST_TOKEN"):
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = os.environ["GPKG_RAY_TEST_TOKEN"]


def main(worker_dir: str) -> None:
    # Ray's files go to a temp dir of the cluster's own, not the machine's
    # shared /tmp/ray; a short one, since Ray puts sockets in it.
    temp_dir = tempfile.mkdtemp(prefix="gpkg-ray-cluster-")
    try:
        run_cluster(temp_dir, worker_dir)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_cluster(temp_dir: str, worker_dir: str) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "temp_dir": temp_dir,
        },
    )
    try:
        cluster.add_node(
            num_cpus=2,
            temp_dir=temp_dir,
            env_vars={"TMPDIR": worker_dir, "HOME": worker_dir},
        )
        cluster.wait_for_nodes()
        print(json.dumps({"address": cluster.address}), flush=True)
        sys.stdin.read()  # until the test closes it
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
