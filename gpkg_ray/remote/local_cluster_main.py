"""Runs a `ray-cluster` remote's local cluster until told to stop; started by
`guild remote start NAME` (`gpkg_ray.remote.local_cluster`), detached.

`python -m gpkg_ray.remote.local_cluster_main STATE_FILE SPEC_JSON`: starts a
head and its workers on this machine, on 127.0.0.1 only, with Ray's token
auth (the token is in the environment), then writes STATE_FILE: its own pid
and start time, the address, its temp dir and the pid and start time of every
Ray process of the cluster, so that `guild remote stop` can end exactly them
even if this process is gone (and not the programs that have their pids after
a kill or a restart of the machine).
On SIGTERM it shuts the cluster down, removes its temp dir and STATE_FILE.

Its nodes start with Ray's full set of processes, unlike the embedded Ray
(engine/local_ray.lean_node) and the tests' clusters: it is the user's
cluster, which Ray's own tools may be pointed at (`ray status` reads what the
autoscaler's monitor publishes, `ray list` and `ray job` use the dashboard's
API server, and a driver of the user's gets its workers' logs from the log
monitor).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading

from gpkg_ray.files import replaced
from gpkg_ray.remote.local_cluster import TEMP_PREFIX

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


def main(state_file: str, spec: dict) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # A temp dir of its own, not the machine's shared /tmp/ray; a short path,
    # since Ray puts sockets there.
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    keep_ray_address_file_in(temp_dir)
    try:
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "gcs_server_port": spec["port"],
                "num_cpus": spec["head_cpus"],
                "include_dashboard": False,
                "temp_dir": temp_dir,
            },
        )
        try:
            for _ in range(spec["workers"]):
                cluster.add_node(
                    num_cpus=spec["cpus"], num_gpus=spec["gpus"], temp_dir=temp_dir
                )
            cluster.wait_for_nodes()
            _write_state(state_file, cluster.address, temp_dir)
            stop.wait()
        finally:
            cluster.shutdown()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
        if os.path.exists(state_file):
            os.remove(state_file)
    return 0


def keep_ray_address_file_in(temp_dir: str) -> None:
    """Ray's Cluster writes the address of the cluster it starts to
    RAY_TMPDIR/ray/ray_current_cluster (by default /tmp/ray, shared by every Ray
    on the machine: a plain `ray.init()` joins what it names, and the write
    fails where /tmp/ray does not exist): keep it in this cluster's temp dir."""
    os.makedirs(os.path.join(temp_dir, "ray"), exist_ok=True)
    os.environ["RAY_TMPDIR"] = temp_dir


def _write_state(state_file: str, address: str, temp_dir: str) -> None:
    import psutil

    from gpkg_ray.processes import handles

    me = psutil.Process()
    state = {
        "pid": me.pid,
        "created": me.create_time(),
        "address": address,
        "temp_dir": temp_dir,
        "processes": handles(me.children(recursive=True)),
    }
    with replaced(state_file) as f:
        json.dump(state, f)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], json.loads(sys.argv[2])))
