"""Everything a tune needs, built once before any work starts.

    check_tune      the tune op's config and flags -> CheckedTune: the spec
                    (with the cluster's trial resources), the cluster's config
                    (it must answer), the steps' Guild op definitions and the
                    warm-start runs; raises GpkgRayError with one line
    prepare_attempt a checked tune and its run -> PreparedTune: what earlier
                    attempts left (ended before anything new starts), the
                    seed, the search's inputs and where things go

The Guild plugin calls `check_tune` before Guild creates the tune run, so a bad
input stops with one line and leaves no run; the tuner calls it again in the
run (the cluster may have changed since) and then `prepare_attempt`. The engine
takes the PreparedTune; nothing flows back but trial outcomes.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpkg_ray.cluster import check_cluster, cluster_defaults, resolve_cluster
from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec import Settings, TuneSpec, read_spec

if TYPE_CHECKING:
    from gpkg_ray.engine.search_inputs import SearchInputs
    from gpkg_ray.remote.config import ClusterConfig
    from gpkg_ray.resume.prior import Prior
    from gpkg_ray.trial.outcome import TrialOutcome

SEED_STRIDE = 1_000_003
"""A later attempt's searcher seed is the first one's plus this per attempt:
the same seed would suggest the values of the first attempt's trials again."""


@dataclass(frozen=True)
class CheckedTune:
    spec: TuneSpec
    cluster: ClusterConfig | None
    """The ray-cluster remote the trials run on; None for an embedded Ray."""
    step_opdefs: tuple
    """Guild op definitions of the steps, in order: their source goes to a
    cluster's nodes."""
    project_dir: str
    """Where the steps' `guild run`s start: the tune op's project."""
    warm_runs: tuple
    """Earlier tune runs whose trials the searcher is told first."""


def check_tune(
    tune_opdef,
    flags: dict[str, Any],
    user_flags: Iterable[str],
    opref,
    guild_home: str,
    tune_run_id: str | None = None,
) -> CheckedTune:
    """Checks a tune op with its flag values (`user_flags`: the names the user
    set; flags the op does not define, given with --force-flags, set step
    flags); `opref` and `tune_run_id` name the tune op's runs and this one, if
    it exists yet. Raises GpkgRayError."""
    from gpkg_ray.resume.warm_start import earlier_tune_runs

    settings = Settings.from_flags(flags)
    cluster = resolve_cluster(settings.cluster)
    settings = _with_cluster_defaults(settings, flags, cluster, user_flags)
    spec, step_opdefs = read_spec(tune_opdef, settings, flags)
    spec = _with_upstream(spec, step_opdefs, guild_home, cluster)
    check_cluster(cluster, settings.cpus, settings.gpus)
    warm_runs = earlier_tune_runs(
        settings.warm_start, opref, guild_home, exclude=tune_run_id
    )
    return CheckedTune(
        spec, cluster, step_opdefs, tune_opdef.guildfile.dir, tuple(warm_runs)
    )


def check_batch(batch_run, guild_home: str) -> CheckedTune:
    """Checks a batch run of an optimizer op (`gpkg.ray/tpe`, ...) and its
    proto: the tune it stands for (see tuning_spec.batch). Raises
    GpkgRayError with one line."""
    from gpkg_ray import guild_api

    proto = guild_api.batch_proto(batch_run)
    op = f"gpkg.ray/{batch_run.opref.op_name}"
    if proto is None:
        raise SpecError(
            f"{op} is a Guild optimizer, not an op of its own: run an op with "
            f"a list or a range of flag values and -o {op}, e.g. "
            f"`guild run train lr=loguniform[1e-4:1e-1] -o {op}`"
        )
    trial_opdef = guild_api.run_opdef(proto)
    if trial_opdef is None:
        raise SpecError(f"cannot read the definition of op '{proto.opref.op_name}'")
    return check_pending_batch(batch_run, proto, trial_opdef, guild_home, batch_run.dir)


def check_pending_batch(
    batch_run, proto, trial_opdef, guild_home: str, batch_dir: str | None = None
) -> CheckedTune:
    """Checks a batch of an optimizer op: its batch run and proto as Guild
    made them, or as it is about to (guild_api.pending_batch: `batch_dir`
    None); `trial_opdef` is the proto's op definition. Raises GpkgRayError
    with one line."""
    from gpkg_ray import guild_api
    from gpkg_ray.tuning_spec.batch import batch_request, batch_spec

    op = f"gpkg.ray/{batch_run.opref.op_name}"
    request = batch_request(
        batch_run,
        proto,
        guild_api.run_opspec(proto),
        guild_api.default_optimizer(trial_opdef),
    )
    request, cluster = _batch_cluster(request, trial_opdef, op)
    spec = batch_spec(request, trial_opdef, batch_dir)
    if cluster is not None:
        spec = _with_trial_upstream(spec, trial_opdef, guild_home, cluster)
    check_cluster(cluster, spec.settings.cpus, spec.settings.gpus)
    return CheckedTune(spec, cluster, (trial_opdef,), trial_opdef.guildfile.dir, ())


def _batch_cluster(request, trial_opdef, op: str):
    """The batch's cluster (its `cluster` flag), and `request` with the
    remote's trial resources for the `cpus`/`gpus` flags not given."""
    from gpkg_ray.tuning_spec.batch import with_opt_flags

    cluster = resolve_cluster(str(request.opt_flags.get("cluster") or "local"))
    if cluster is None:
        return request, None
    if trial_opdef.steps:
        # Guild makes a pipeline's step runs itself, inside the trial's `guild
        # run`: only the trial's own run would come home from the node.
        raise SpecError(
            f"{op}: cluster={cluster.name}: a pipeline (a `steps` op) as the "
            "trial runs on the embedded Ray only: use cluster=local, or a tune "
            "op whose steps are the pipeline's"
        )
    defaults = cluster_defaults(cluster, request.given)
    return with_opt_flags(request, defaults), cluster


def _with_trial_upstream(
    spec: TuneSpec, trial_opdef, guild_home: str, cluster
) -> TuneSpec:
    """A batch on a cluster: the runs its trial op requires (Guild resolved
    them into the proto's flags, `operation:prepare: ID`) go to the nodes as
    a tune op's do (see gpkg_ray.upstream); on the embedded Ray the trials
    resolve them in GUILD_HOME, as Guild's own trials do."""
    from gpkg_ray.tuning_spec.steps import outside_requirements

    (step,) = spec.plan.steps
    step = replace(step, requires=outside_requirements(trial_opdef))
    spec = replace(spec, plan=replace(spec.plan, steps=(step,)))
    return _with_upstream(spec, (trial_opdef,), guild_home, cluster)


def _with_upstream(spec: TuneSpec, step_opdefs, guild_home: str, cluster) -> TuneSpec:
    """`spec` with the runs from outside the trial its steps require, resolved
    once for the tune; on a cluster, checked against its size policy."""
    from gpkg_ray import upstream

    runs = upstream.resolve_upstream(spec.plan, step_opdefs, guild_home)
    if not runs:
        return spec
    if cluster is not None:
        upstream.check_size(runs, guild_home, cluster)
    return replace(spec, plan=replace(spec.plan, upstream=runs))


def _with_cluster_defaults(
    settings: Settings, flags: dict[str, Any], cluster, user_flags: Iterable[str]
) -> Settings:
    """`settings` with the remote's trial resources for the flags the user left
    out, checked as the flags are."""
    defaults = cluster_defaults(cluster, user_flags)
    if not defaults:
        return settings
    try:
        return Settings.from_flags({**flags, **defaults})
    except SpecError as e:
        raise SpecError(
            f"{e} (from the trial-cpus/trial-gpus of remote '{cluster.name}': "
            "set cpus or gpus, or fix the remote)"
        ) from e


@dataclass(frozen=True)
class PreparedTune:
    """One attempt of a tune run, ready to search."""

    checked: CheckedTune
    run_id: str
    run_dir: str
    guild_home: str
    prior: Prior
    """What earlier attempts left, and the warm-start trials."""
    seed: int
    """The tune's seed: the flag's, else the first attempt's, else random."""

    @property
    def spec(self) -> TuneSpec:
        return self.checked.spec

    @property
    def tag(self) -> str:
        """The tag of the tune's runs: step runs and trial records."""
        return tune_tag(self.run_id)

    @property
    def ray_dir(self) -> str:
        """Ray Tune's storage and the driver's Ray log, in the tune run."""
        return os.path.join(self.run_dir, "ray")

    @property
    def search_seed(self) -> int:
        """This attempt's searcher seed."""
        return (self.seed + SEED_STRIDE * (self.prior.attempt - 1)) % 2**31

    @property
    def attempt(self) -> int:
        return self.prior.attempt

    @property
    def next_number(self) -> int:
        """The number of the first new trial of this attempt."""
        return self.prior.next_number

    @property
    def rerun(self) -> list[TrialOutcome]:
        """Interrupted trials of earlier attempts: run again first."""
        return self.prior.rerun

    @property
    def trials_left(self) -> int:
        return self.prior.remaining(self.spec.settings.max_trials)

    def search_inputs(self) -> SearchInputs:
        from gpkg_ray.engine.search_inputs import SearchInputs

        prior = self.prior
        return SearchInputs(
            trials=self.trials_left,
            rerun=tuple(o.values for o in prior.rerun),
            ended=tuple(o.values for o in prior.finished),
            told=tuple(prior.told),
        )


def prepare_attempt(
    checked: CheckedTune, run_id: str, run_dir: str, guild_home: str
) -> PreparedTune:
    """Reads what earlier attempts of the tune run left and ends what a killed
    one left running (see resume.prior)."""
    from gpkg_ray.resume.prior import load_prior

    prior = load_prior(
        run_dir,
        run_id,
        checked.spec.plan,
        guild_home,
        tune_tag(run_id),
        checked.warm_runs,
    )
    seed = _seed(checked.spec.settings, prior)
    return PreparedTune(checked, run_id, run_dir, guild_home, prior, seed)


def tune_tag(run_id: str) -> str:
    """The tag of a tune's runs (step runs and trial records): `tune-` and the
    tune run's short id."""
    return f"tune-{run_id[:8]}"


def _seed(settings: Settings, prior: Prior) -> int:
    if settings.seed is not None:
        return settings.seed
    if prior.seed is not None:
        return prior.seed
    return random.randrange(2**31)
