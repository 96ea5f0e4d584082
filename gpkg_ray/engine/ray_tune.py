"""Runs a TuneSpec's trials with Ray Tune on the Ray this process is connected to.

The engine takes plain data (a TuneSpec and a Workspace) and reports trial events
to a listener; where the spec came from (an op config today, Guild's `--optimizer`
batch form later) and where results go are not its business.
"""

from __future__ import annotations

from collections.abc import Iterable

from ray import tune

from gpkg_ray.engine.events import TrialEvents
from gpkg_ray.engine.searchers import Search
from gpkg_ray.environ import patched_environ
from gpkg_ray.spec import TrialPlan, TuneSpec
from gpkg_ray.trial.outcome import TrialListener, TrialOutcome
from gpkg_ray.trial.runner import OBJECTIVE, run_trial
from gpkg_ray.trial.workspace import Workspace


def guild_trial(config, plan: TrialPlan, workspace: Workspace, tags: tuple[str, ...]):
    """The Ray Tune trainable: one trial's steps as Guild runs."""
    run_trial(plan, config, workspace, tune.report, tags)


def run_search(
    spec: TuneSpec,
    search: Search,
    workspace: Workspace,
    listener: TrialListener,
    storage_dir: str,
    tags: Iterable[str] = (),
) -> list[TrialOutcome]:
    """Runs the search on the Ray this process is connected to.

    Returns every trial's outcome, ordered by trial number.
    """
    settings = spec.settings
    events = TrialEvents(spec.plan, listener)
    trainable = tune.with_resources(
        tune.with_parameters(
            guild_trial, plan=spec.plan, workspace=workspace, tags=tuple(tags)
        ),
        {"cpu": settings.cpus, "gpu": settings.gpus},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search.param_space,
        tune_config=tune.TuneConfig(
            search_alg=search.algorithm,
            num_samples=search.num_samples,
            max_concurrent_trials=settings.max_concurrent or None,
            metric=OBJECTIVE,
            mode=spec.plan.objective.mode,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name="search",
            storage_path=storage_dir,
            verbose=0,
            callbacks=[events],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    with patched_environ(_TUNE_DRIVER_ENV):
        tuner.fit()
    return sorted(events.outcomes.values(), key=lambda o: o.number)


_TUNE_DRIVER_ENV = {
    # Tune's old, quiet console output (verbose=0 prints nothing with it).
    "RAY_AIR_NEW_OUTPUT": "0",
    # A trial reports scalars before its objective exists (while `train` runs,
    # before `evaluate`): that is not an error.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}
