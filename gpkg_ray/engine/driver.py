"""The engine's one entry point: a prepared tune attempt's search, on Ray.

`run_tune` brings Ray up (an embedded Ray, or a ray-cluster remote joined with
the steps' source), handles stop signals, builds the search, runs it and takes
Ray down. It tells a listener what happens and returns the trials' outcomes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gpkg_ray import faults
from gpkg_ray.listener import SearchStarted, TuneListener
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.workspace import Workspace

if TYPE_CHECKING:
    from gpkg_ray.engine.cluster_ray import ClusterRuns
    from gpkg_ray.engine.interrupts import StopRequest
    from gpkg_ray.preparation import PreparedTune

_ENGINE = "gpkg_ray.engine.ray_tune"
"""Ray Tune and the trainable: imported while the embedded Ray starts."""

DRIVER_LOG = "driver.log"
"""Ray's log on the driver, in the tune run's `ray/` dir."""


def run_tune(
    prepared: PreparedTune, listener: TuneListener, stop: StopRequest
) -> list[TrialOutcome]:
    """Runs what is left of the search of `prepared`; returns the outcome of
    every trial this attempt ran, by trial number."""
    from gpkg_ray.engine.interrupts import (
        handling_stops,
        raise_if_stopped,
        watching_job,
    )

    # Stop signals are handled before Ray starts and the steps' source is
    # staged: a stop then ends the start, and its temp dirs and processes go.
    with handling_stops(stop) as handle_again:
        os.makedirs(prepared.ray_dir, exist_ok=True)
        log_file = os.path.join(prepared.ray_dir, DRIVER_LOG)
        try:
            with ray_session(prepared, log_file, listener) as cluster_runs:
                handle_again()  # ray.init set a SIGTERM handler of its own
                raise_if_stopped(stop)  # a stop while Ray started
                with watching_job(prepared.checked.cluster, stop):
                    return _search(prepared, listener, stop, cluster_runs)
        except SystemExit as e:
            if e.code != signal.SIGTERM:
                raise
            # That handler, while ray.init runs: it exits with the signal's
            # number (Ray is cleaned up on the way out). A stop like any other.
            stop.signal = signal.SIGTERM
            raise KeyboardInterrupt from e


@contextmanager
def ray_session(
    prepared: PreparedTune, log_file: str, listener: TuneListener
) -> Iterator[ClusterRuns | None]:
    """Ray for the search: an embedded one (yields None), or the tune's
    ray-cluster remote (yields how trials send their runs home)."""
    cluster = prepared.checked.cluster
    if cluster is None:
        # Ray is imported inside: the embedded Ray's loopback setting first.
        from gpkg_ray.engine.local_ray import embedded_ray

        with embedded_ray(
            log_file=log_file, preload=[_ENGINE], announce=listener.ray_starting
        ) as ray:
            listener.ray_started(ray.temp_dir, ray.processes)
            faults.point("ray-up")
            yield None
        return
    from gpkg_ray.engine.cluster_ray import cluster_session
    from gpkg_ray.upstream import sent_run_ids

    upstream = sent_run_ids(prepared.spec.plan.upstream, prepared.guild_home)
    with cluster_session(
        cluster,
        prepared.checked.step_opdefs,
        prepared.guild_home,
        prepared.run_id,
        log_file,
        tuple(upstream),
        prepared.checked.project_dir,
        prepared.spec.plan.steps[0].batch,
    ) as cluster_runs:
        yield cluster_runs


def _search(
    prepared: PreparedTune,
    listener: TuneListener,
    stop: StopRequest,
    cluster_runs: ClusterRuns | None,
) -> list[TrialOutcome]:
    from gpkg_ray.engine.ray_tune import run_search
    from gpkg_ray.engine.schedulers import describe_scheduler
    from gpkg_ray.engine.searchers import build_search

    spec = prepared.spec
    _check_trial_fits(prepared)
    search = build_search(spec, prepared.search_seed, prepared.search_inputs())
    listener.search_started(
        SearchStarted(
            trials=search.num_samples,
            seed=prepared.seed,
            scheduler=describe_scheduler(spec),
            note=search.note,
        )
    )
    workspace = Workspace(
        prepared.checked.project_dir,
        prepared.guild_home,
        # The tune run records the environment once; steps skip `pip freeze`.
        env={"NO_PIP_FREEZE": "1"},
        tune_run_id=prepared.run_id,
    )
    return run_search(prepared, search, workspace, listener, stop, cluster_runs)


def _check_trial_fits(prepared: PreparedTune) -> None:
    """A trial fits on a node of the Ray that is up now, as Ray counts its
    resources (checked before the run too, from what the machine or the
    cluster said then)."""
    import ray

    from gpkg_ray.cluster import check_trial_fits

    nodes = [
        (node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
        for node in ray.nodes()
        if node.get("Alive")
    ]
    cluster = prepared.checked.cluster
    where = "the embedded Ray" if cluster is None else f"cluster '{cluster.name}'"
    settings = prepared.spec.settings
    check_trial_fits(settings.cpus, settings.gpus, nodes, where)
