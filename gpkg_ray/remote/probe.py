"""Asks a Ray cluster's GCS for its nodes; run as a subprocess by
`gpkg_ray.remote.status` (`python -m gpkg_ray.remote.probe HOST:PORT`).

A subprocess keeps Ray's C++ connection warnings out of the caller's output
and its settings (token, timeouts) out of the caller's environment. It joins
no cluster and starts no driver: it reads GCS tables. Prints one JSON object:
{"nodes": [...]}, or {"error": "..."} with exit status 1.
"""

from __future__ import annotations

import json
import sys


def nodes(address: str) -> list[dict]:
    from ray._raylet import GcsClient
    from ray.autoscaler.v2.sdk import get_cluster_resource_state
    from ray.core.generated.autoscaler_pb2 import NodeStatus

    client = GcsClient(address=address)
    state = get_cluster_resource_state(client)
    return [
        {
            "node_id": node.node_id.hex(),
            "address": node.node_ip_address,
            "status": NodeStatus.Name(node.status),
            "total": dict(node.total_resources),
            "available": dict(node.available_resources),
        }
        for node in state.node_states
    ]


def main(argv: list[str]) -> int:
    try:
        print(json.dumps({"nodes": nodes(argv[1])}))
    except Exception as e:  # any failure is reported to the caller as data
        print(json.dumps({"error": str(e).strip().splitlines()[0] or repr(e)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
