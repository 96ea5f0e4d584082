"""gpkg.ray: hyperparameter tuning with Ray Tune as a Guild operation.

The data path, one stage each:

    tuning_spec   op config + flags -> TuneSpec (settings, space, objective, steps)
    preparation   everything a tune needs, checked and built once
    trial         one trial's steps as Guild runs, scalars read live -> results
    engine        Ray Tune runs the trials (embedded Ray or a cluster, searchers,
                  schedulers), telling a TuneListener what happens
    results       trial records, progress, trials table, summary, report
    resume        the journal, what a killed attempt left, warm start
    remote        `ray-cluster` Guild remotes

`gpkg_ray.tuner` is the `tune` op's main; it only wires these together. The root
package re-exports the plain-data API; `gpkg_ray.engine` (which imports Ray) is
imported where it is used.
"""

# Re-exports resolve on first use: Guild imports `gpkg_ray.plugin` in every
# `guild` command, and that must not pay for the rest of the package.
_EXPORTS = {
    "ClusterError": "gpkg_ray.errors",
    "GpkgRayError": "gpkg_ray.errors",
    "SpecError": "gpkg_ray.errors",
    "TrialFailed": "gpkg_ray.errors",
    "Objective": "gpkg_ray.tuning_spec",
    "Settings": "gpkg_ray.tuning_spec",
    "TrialPlan": "gpkg_ray.tuning_spec",
    "TuneSpec": "gpkg_ray.tuning_spec",
    "load_spec": "gpkg_ray.tuning_spec",
    "CheckedTune": "gpkg_ray.preparation",
    "PreparedTune": "gpkg_ray.preparation",
    "check_tune": "gpkg_ray.preparation",
    "SearchStarted": "gpkg_ray.listener",
    "TuneListener": "gpkg_ray.listener",
    "Trial": "gpkg_ray.trial.runner",
    "TrialOutcome": "gpkg_ray.trial.outcome",
    "TrialResult": "gpkg_ray.trial.result",
    "Workspace": "gpkg_ray.trial.workspace",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gpkg_ray' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
