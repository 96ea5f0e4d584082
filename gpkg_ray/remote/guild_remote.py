"""The `ray-cluster` Guild remote type (entry point `guild.remotetypes`).

Wiring only: `guild remote status NAME` reads the remote's config
(`remote.config`) and asks the cluster for its nodes (`remote.status`).
"""

from __future__ import annotations

from guild import remote as remotelib


class RayClusterRemoteType(remotelib.RemoteType):
    def __init__(self, _ep):
        pass

    def remote_for_config(self, name, config):
        return RayClusterRemote(name, config)

    def remote_for_spec(self, spec):
        raise remotelib.RemoteForSpecNotImplemented(
            "define a ray-cluster remote in your Guild config"
        )


class RayClusterRemote(remotelib.Remote):
    def __init__(self, name, config):
        self.name = name
        self.config = config

    def status(self, verbose=False):
        from guild import cli

        from gpkg_ray.errors import ClusterError
        from gpkg_ray.remote.config import cluster_config
        from gpkg_ray.remote.status import ClusterDown, cluster_nodes, status_lines

        try:
            cluster = cluster_config(self.name, self.config)
            nodes = cluster_nodes(cluster)
        except ClusterDown as e:
            raise remotelib.Down(f"({e})") from e
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
        for line in status_lines(cluster, nodes):
            cli.out(line)

    def start(self):
        raise remotelib.OperationNotSupported(
            f"{self.name} is a cluster started outside Guild: start it with "
            "`ray start --head` on its head node (and `ray start --address` on "
            "each worker)"
        )

    def stop(self):
        raise remotelib.OperationNotSupported(
            f"{self.name} is a cluster started outside Guild: stop it on its "
            "nodes (`ray stop` there stops every Ray process of that machine)"
        )
