"""The `ray-cluster` Guild remote type (entry point `guild.remotetypes`).

Wiring only: `guild remote status NAME` reads the remote's config
(`remote.config`) and asks the cluster for its nodes (`remote.status`);
`guild remote start|stop NAME` start and stop a cluster the config describes
as local (`remote.local_cluster`), or submit and cancel the SLURM job of a
slurm remote (`remote.slurm`).
"""

from __future__ import annotations

from guild import remote as remotelib

from gpkg_ray.errors import ClusterError


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

        from gpkg_ray.remote.config import cluster_config
        from gpkg_ray.remote.status import ClusterDown, cluster_nodes, status_lines

        try:
            cluster = cluster_config(self.name, self.config)
            nodes = cluster_nodes(cluster)
        except ClusterDown as e:
            raise remotelib.Down(f"({e})") from e
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
        if cluster.slurm is not None:
            from gpkg_ray.remote.slurm import current_job

            job = current_job(self.name)
            if job is not None:  # it ran a moment ago (cluster_nodes checked)
                cli.out(f"{self.name}: {job.describe()}")
        for line in status_lines(cluster, nodes):
            cli.out(line)

    def start(self):
        from guild import cli

        from gpkg_ray.remote import local_cluster

        cluster = self._cluster()
        if cluster.slurm is not None:
            return self._start_slurm(cluster)
        if cluster.local is None:
            raise remotelib.OperationNotSupported(
                f"{self.name} is a cluster started outside Guild: start it with "
                "`ray start --head` on its head node (and `ray start --address` "
                "on each worker), or describe it under `local:` for Guild to start"
            )
        try:
            address = local_cluster.start(self.name, cluster.port, cluster.local)
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
        spec = cluster.local
        cli.out(
            f"{self.name}: Ray cluster started at {address} (a head and "
            f"{spec.workers} worker{'s' if spec.workers != 1 else ''}, token auth); "
            f"stop it with `guild remote stop {self.name}`"
        )

    def stop(self):
        from guild import cli

        from gpkg_ray.remote import local_cluster

        cluster = self._cluster()
        if cluster.slurm is not None:
            return self._stop_slurm()
        if cluster.local is None:
            raise remotelib.OperationNotSupported(
                f"{self.name} is a cluster started outside Guild: stop it on its "
                "nodes (`ray stop` there stops every Ray process of that machine)"
            )
        if local_cluster.stop(self.name):
            cli.out(f"{self.name}: Ray cluster stopped")
        else:
            cli.out(f"{self.name}: not running")

    def _start_slurm(self, cluster):
        from guild import cli

        from gpkg_ray.remote import slurm

        try:
            job, address = slurm.start(self.name, cluster.slurm, out=cli.out)
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
        nodes = cluster.slurm.nodes
        cli.out(
            f"{self.name}: Ray cluster started at {address} in SLURM job "
            f"{job.job_id} ({nodes} node{'s' if nodes != 1 else ''}, token auth, "
            f"time left {job.time_left}); stop it with `guild remote stop {self.name}`"
        )

    def _stop_slurm(self):
        from guild import cli

        from gpkg_ray.remote import slurm

        try:
            job = slurm.cancel(self.name)
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
        if job is None:
            cli.out(f"{self.name}: not running")
        elif job.ended:
            cli.out(f"{self.name}: {job.describe()}; its state is cleared")
        else:
            cli.out(f"{self.name}: SLURM job {job.job_id} cancelled")

    def _cluster(self):
        from gpkg_ray.remote.config import cluster_config

        try:
            return cluster_config(self.name, self.config)
        except ClusterError as e:
            raise remotelib.OperationError(str(e)) from e
