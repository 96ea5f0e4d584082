"""The `remotes-cluster` Guild remote type (entry point `guild.remotetypes`):
`guild remote start|status|stop NAME` for a cluster of Guild ssh remotes
(gpkg_ray.remote.remotes_cluster)."""

from __future__ import annotations

from guild import remote as remotelib

from gpkg_ray.errors import ClusterError


class RemotesClusterRemoteType(remotelib.RemoteType):
    def __init__(self, _ep):
        pass

    def remote_for_config(self, name, config):
        return RemotesClusterRemote(name, config)

    def remote_for_spec(self, spec):
        raise remotelib.RemoteForSpecNotImplemented(
            "define a remotes-cluster remote in your Guild config"
        )


class RemotesClusterRemote(remotelib.Remote):
    def __init__(self, name, config):
        self.name = name
        self.config = config

    def status(self, verbose=False):
        from guild import cli

        from gpkg_ray.remote import remotes_cluster
        from gpkg_ray.remote.status import ClusterDown

        cluster = self._cluster()
        try:
            lines = remotes_cluster.status_lines(cluster)
        except ClusterDown as e:
            raise remotelib.Down(f"({e})") from e
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
        for line in lines:
            cli.out(line)

    def start(self):
        from guild import cli

        from gpkg_ray.remote import remotes_cluster

        cluster = self._cluster()
        try:
            address = remotes_cluster.start(cluster, cli.out)
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
        members = ", ".join(m.name for m in cluster.members)
        cli.out(
            f"{self.name}: Ray cluster started, head here at {address} (0 CPUs), "
            f"members {members} (token auth); stop it with "
            f"`guild remote stop {self.name}`"
        )

    def stop(self):
        from guild import cli

        from gpkg_ray.remote import remotes_cluster

        cluster = self._cluster()
        if remotes_cluster.stop(cluster, cli.out):
            cli.out(f"{self.name}: Ray cluster stopped on this machine and its members")
        else:
            cli.out(f"{self.name}: not running")

    def _cluster(self):
        from gpkg_ray.remote import remotes_cluster
        from gpkg_ray.remote.config import defined_remotes

        try:
            return remotes_cluster.remotes_cluster(
                self.name, self.config, defined_remotes()
            )
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
