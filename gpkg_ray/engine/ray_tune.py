"""Runs a tune's trials with Ray Tune on the Ray this process is connected to:
the trainable (a trial's steps as Guild runs), its callbacks and the Tuner.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.stopper import Stopper

from gpkg_ray.engine.cluster_ray import ClusterRuns
from gpkg_ray.engine.events import TrialEvents
from gpkg_ray.engine.fail_fast import FailFast
from gpkg_ray.engine.interrupts import StopRequest, raise_if_stopped
from gpkg_ray.engine.schedulers import build_scheduler
from gpkg_ray.engine.searchers import Search
from gpkg_ray.environ import patched_environ
from gpkg_ray.listener import Listeners, TuneListener
from gpkg_ray.remote.batch_proto import install_proto
from gpkg_ray.remote.run_sync import NodeInfo, RunSender, deliver_to, node_guild_home
from gpkg_ray.resume.reuse import offered_runs
from gpkg_ray.trial.launcher import StepLauncher, step_launcher
from gpkg_ray.trial.limits import Limits
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import TrialResult
from gpkg_ray.trial.runner import Trial
from gpkg_ray.trial.workspace import Workspace
from gpkg_ray.tuning_spec import TrialPlan
from gpkg_ray.upstream import install as install_upstream

if TYPE_CHECKING:
    from gpkg_ray.preparation import PreparedTune

HEARTBEAT_SECONDS = 1.0
"""Longest a trainable's `step` waits for a new result. Ray can stop a trial only
between two `step` calls (the trial's actor runs one call at a time), so this
bounds how long a stop waits: Ray force-kills trials that take 10 s to stop at
the end of a search, and `guild stop` signals every process after 5 s."""


class GuildTrial(tune.Trainable):
    """The Ray Tune trainable: one trial's steps as Guild runs.

    A class rather than a function: Ray calls `cleanup` in the trial's actor
    when it stops the trial (a scheduler's decision, the end of the search), so
    the running step is stopped through Guild's stop, and ends `terminated`,
    before the actor goes away.

    Actors are reused (`reset_config`): a new worker process per trial would
    pay Python's and Ray's start and our imports, about 1.5 s, each time. For
    the same reason an actor keeps a step launcher that has imported Guild.
    """

    def setup(
        self,
        config: dict[str, Any],
        plan: TrialPlan,
        workspace: Workspace,
        tags: tuple[str, ...],
        limits: Limits,
        scheduled: bool = False,
        cluster_runs: ClusterRuns | None = None,
    ) -> None:
        self._sender = None
        if cluster_runs is not None:
            # On a cluster's node: the job's working dir holds the project
            # source (Tune has moved this process to the trial's dir, and says
            # where it was), and runs go to a Guild home of this node, then home.
            source = os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd())
            home = node_guild_home(cluster_runs.tune_run_id)
            if cluster_runs.upstream is not None:
                install_upstream(home, cluster_runs.upstream)
            if cluster_runs.batch is not None:
                plan = _with_batch_dir(plan, install_proto(home, cluster_runs.batch))
            workspace = replace(workspace, project_dir=source, guild_home=home)
            self._sender = RunSender(
                deliver_to(cluster_runs.collector),
                home,
                cluster_runs.max_copy_bytes,
                NodeInfo.here(),
            )
        self._trial_args = (plan, workspace, tags, limits, scheduled)
        self._launcher: StepLauncher | None = None
        self._start_trial(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """The next trial in this actor: Ray calls it once the last one ended
        or was stopped (its step was then stopped by stop_trial)."""
        self._stop()
        self._start_trial(new_config)
        return True

    def _start_trial(self, config: dict[str, Any]) -> None:
        plan, workspace, tags, limits, scheduled = self._trial_args
        if self._launcher is None or self._launcher.gone:
            self._launcher = step_launcher(workspace.project_dir, workspace.step_env())
        self.trial = Trial(
            plan, config, workspace, self._launcher, tags, limits, scheduled
        )

    def step(self) -> dict[str, Any]:
        try:
            result = self.trial.next_result(timeout=HEARTBEAT_SECONDS)
        except BaseException:
            # The failed step's run, as it ended; the failure is what counts.
            with contextlib.suppress(Exception):
                self._send_runs(ended=True)
            raise
        if result is None:  # nothing new: a heartbeat that schedulers skip
            result = self.trial.snapshot()
        # Before the result that ends the trial: its runs are home by then.
        self._send_runs(ended=self.trial.ended)
        reported = result.to_ray()
        if self.trial.ended:
            reported["done"] = True  # Ray's own key: the trial is over
        return reported

    def offer_runs(self, trial_id: str, runs: dict[str, list[str]]) -> None:
        """Runs of trial `trial_id`'s earlier attempts that it may reuse (see
        OfferFinishedSteps), if it is still this actor's trial."""
        if self.trial_id == trial_id:
            self.trial.offered = runs

    def stop_trial(self, trial_id: str) -> None:
        """Stops trial `trial_id`'s running step, if it is still this actor's
        trial (see StopStepsOfStoppedTrials)."""
        if self.trial_id == trial_id:
            self._stop()

    def cleanup(self) -> None:
        self._stop()
        if self._launcher is not None:
            self._launcher.close()

    def _stop(self) -> None:
        self.trial.stop()
        self._send_runs(ended=True)

    def _send_runs(self, ended: bool) -> None:
        """On a cluster: sends the trial's runs home (see remote.run_sync);
        once the trial has `ended`, removes them from this node."""
        if self._sender is None:
            return
        runs = list(self.trial.runs.values())
        running = None if ended else self.trial.running_run_id
        self._sender.sync(self.trial_id, runs, running, force=ended)
        if ended:
            self._sender.remove_runs(runs)


def _with_batch_dir(plan: TrialPlan, batch_dir: str) -> TrialPlan:
    """`plan` with its batch trials made from the batch run at `batch_dir`
    (on a node: the stub of the batch run there)."""
    steps = tuple(
        replace(step, batch=batch_dir) if step.batch is not None else step
        for step in plan.steps
    )
    return replace(plan, steps=steps)


class CloseLostRuns(tune.Callback):
    """On a cluster: a trial that failed where it ran (its node died, say)
    has its runs that never ended closed as `error` in GUILD_HOME, before
    Ray runs the trial again or records its failure."""

    def __init__(self, collector):
        self.collector = collector

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._close(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial)

    def _close(self, trial) -> None:
        import ray

        ray.get(self.collector.close_trial.remote(trial.trial_id, LOST_RUN_REASON))


LOST_RUN_REASON = "its trial failed on the node before the run ended"


class StopOnSystematicFailure(Stopper):
    """Ends the search once `fail_fast` found that its first trials all failed
    the same way: Ray stops the running trials (their trainables stop their
    steps) and starts no more, as for a time budget."""

    def __init__(self, fail_fast: FailFast):
        self.fail_fast = fail_fast

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.fail_fast.failure is not None


class StopStepsOfStoppedTrials(tune.Callback):
    """Tells a stopped trial's actor to stop its running step.

    Ray keeps the actor of a trial it stops (a scheduler's decision) for a
    later trial (reuse_actors) without calling it: the trial's step would run
    on until then. Actor tasks from this process run in order, and the actor
    checks the trial id, so the call never stops the actor's next trial.
    """

    def __init__(self):
        self._actors: dict[str, Any] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._actors[trial.trial_id] = trial.temporary_state.ray_actor

    def on_trial_complete(self, iteration, trials, trial, **info):
        actor = self._actors.pop(trial.trial_id, None)
        ended = TrialResult.from_ray(trial.last_result or {}, ()).done
        if actor is not None and not ended:
            actor.stop_trial.remote(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._actors.pop(trial.trial_id, None)


WAIT_NOTICE_SECONDS = 10.0
"""How long no trial may run, with trials waiting to start, before the tune
says what they wait for; said again every WAIT_REPEAT_SECONDS while it lasts."""
WAIT_REPEAT_SECONDS = 120.0


class ResourceWaits(tune.Callback):
    """Says what the trials wait for when none runs and the next one cannot
    start: the cluster is busy (its nodes could hold a trial, see
    cluster.check_trial_fits, but none has room now). Ray says so only in its
    log."""

    def __init__(
        self,
        listener: TuneListener,
        cpus: float,
        gpus: float,
        clock: Callable[[], float] = time.monotonic,
        free: Callable[[], dict[str, float]] | None = None,
    ):
        """`free`: the cluster's free resources now (Ray's, by default)."""
        self.listener = listener
        self.cpus, self.gpus = cpus, gpus
        self.needs = f"{cpus:g} CPUs, {gpus:g} GPUs"
        self.clock = clock
        self.free = free or _free_resources
        self._since: float | None = None
        self._next_notice = 0.0

    def on_step_begin(self, iteration, trials, **info):
        waiting = [t for t in trials if t.status == "PENDING"]
        if not waiting or any(t.status == "RUNNING" for t in trials):
            self._since = None
            return
        now = self.clock()
        if self._since is None:
            self._since, self._next_notice = now, now + WAIT_NOTICE_SECONDS
        if now < self._next_notice:
            return
        free = self.free()
        if _starting(free) or (
            free.get("CPU", 0) >= self.cpus and free.get("GPU", 0) >= self.gpus
        ):
            # A trial's worker is starting (slow on a loaded machine), or there
            # is room enough in all for it to: look again in a while.
            self._next_notice = now + WAIT_NOTICE_SECONDS
            return
        self._next_notice = now + WAIT_REPEAT_SECONDS
        self.listener.search_waiting(self._why(len(waiting), now - self._since, free))

    def _why(self, waiting: int, seconds: float, free: dict[str, float]) -> str:
        return (
            f"{seconds:.0f} s: no trial runs; {waiting} wait for a node with "
            f"{self.needs} free (free now: {free.get('CPU', 0):g} CPUs, "
            f"{free.get('GPU', 0):g} GPUs in all)"
        )


def _starting(free: dict[str, float]) -> bool:
    """Whether a trial's resources are reserved (its placement group's
    `CPU_group_*`, `GPU_group_*`) but not yet taken by its worker."""
    return any(
        name.startswith(("CPU_group_", "GPU_group_")) and amount > 0
        for name, amount in free.items()
    )


def _free_resources() -> dict[str, float]:
    import ray

    return ray.available_resources()


class OfferFinishedSteps(tune.Callback):
    """Offers each trial that runs again after a restart of the tune the runs
    its earlier attempts made: a step whose run completed is not run again
    (see resume.reuse).

    After TrialEvents in the callbacks, which has matched the trial to its
    earlier outcome by then. Ray calls on_trial_start before it asks the
    trial's actor for its first result, and actor tasks from this process run
    in order: the offer is there before the trial starts a step.
    """

    def __init__(self, events: TrialEvents, rerun: Iterable[int]):
        self.events = events
        self._rerun = set(rerun)
        """Numbers of the interrupted trials not yet started."""

    def on_trial_start(self, iteration, trials, trial, **info):
        outcome = self.events.outcomes.get(trial.trial_id)
        if outcome is None or outcome.number not in self._rerun:
            return
        # Once: a retry of the trial (max-failures) runs every step again.
        self._rerun.discard(outcome.number)
        runs = offered_runs(outcome)
        if runs:
            trial.temporary_state.ray_actor.offer_runs.remote(trial.trial_id, runs)


def run_search(
    prepared: PreparedTune,
    search: Search,
    workspace: Workspace,
    listener: TuneListener,
    stop: StopRequest,
    cluster_runs: ClusterRuns | None = None,
) -> list[TrialOutcome]:
    """Runs the search on the Ray this process is connected to.

    Returns the outcome of every trial this search ran, ordered by trial number.
    Trials still running when the search ends early (a stop signal, the time
    budget, its first trials failing the same way: then `stop.failure` says
    so) are stopped and recorded as such. In a resumed tune, trials are
    numbered after the earlier ones, and interrupted ones keep their numbers.
    With `cluster_runs`, trials run on a cluster's nodes and send their runs
    home.
    """
    spec = prepared.spec
    settings = spec.settings
    fail_fast = FailFast(settings.fail_fast)
    events = TrialEvents(
        spec.plan,
        Listeners(listener, fail_fast),
        settings.scheduler,
        prepared.next_number,
        prepared.rerun,
    )
    rerun = [outcome.number for outcome in prepared.rerun]
    trainable = tune.with_resources(
        tune.with_parameters(
            GuildTrial,
            plan=spec.plan,
            workspace=workspace,
            tags=(prepared.tag,),
            limits=Limits.from_settings(settings),
            scheduled=settings.scheduler != "fifo",
            cluster_runs=cluster_runs,
        ),
        {"cpu": settings.cpus, "gpu": settings.gpus},
    )
    attempt = prepared.attempt
    tuner = tune.Tuner(
        trainable,
        param_space=search.param_space,
        tune_config=tune.TuneConfig(
            # No metric here: the searcher and the scheduler each have their own
            # (the objective, and the scheduler metric).
            search_alg=search.algorithm,
            scheduler=build_scheduler(spec),
            num_samples=search.num_samples,
            time_budget_s=settings.time_budget or None,
            trial_dirname_creator=lambda trial: trial.trial_id,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="search" if attempt == 1 else f"search-{attempt}",
            storage_path=prepared.ray_dir,
            verbose=0,
            stop=StopOnSystematicFailure(fail_fast),
            callbacks=[
                events,
                # Not on a cluster: see resume.reuse.
                *([] if cluster_runs else [OfferFinishedSteps(events, rerun)]),
                StopStepsOfStoppedTrials(),
                ResourceWaits(listener, settings.cpus, settings.gpus),
                *([CloseLostRuns(cluster_runs.collector)] if cluster_runs else []),
                # Ray's result log of each trial, which its analysis at the end
                # of `fit` reads. Not its TensorBoard or CSV loggers (see
                # _TUNE_DRIVER_ENV): the curves are the step runs' own scalars.
                JsonLoggerCallback(),
            ],
            # Ray runs a failed trial again from its start: its next attempt.
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # A trial's state is its Guild runs; Ray's default for class
            # trainables would call save_checkpoint at the end of each trial.
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
        ),
    )
    raise_if_stopped(stop)  # a stop while the search was built
    started = time.monotonic()
    try:
        with patched_environ(_TUNE_DRIVER_ENV):
            tuner.fit()
    finally:
        stop.failure = fail_fast.failure
        events.end_running(_early_end_reason(stop, settings.time_budget, started))
    return sorted(events.outcomes.values(), key=lambda o: o.number)


def _early_end_reason(stop: StopRequest, time_budget: float, started: float) -> str:
    if stop.reason:
        return stop.reason
    if time_budget and time.monotonic() - started >= time_budget:
        return f"time-budget={time_budget:g} s reached"
    return "the search ended"


EXPERIMENT_STATE_PERIOD_ENV = "TUNE_GLOBAL_CHECKPOINT_S"
"""Ray Tune's setting of how often it saves its experiment state (seconds)."""

_TUNE_DRIVER_ENV = {
    # Tune's old, quiet console output (verbose=0 prints nothing with it).
    "RAY_AIR_NEW_OUTPUT": "0",
    # A trial reports scalars before its objective exists (while `train` runs,
    # before `evaluate`): that is not an error.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # SIGINT is handled by engine.interrupts, which asks Tune to stop by SIGUSR1.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    # Only the loggers given in RunConfig (Ray's JSON results). Ray's TensorBoard
    # logger wrote each trial's reports again, under Ray's trial ids, into the
    # tune run, where `guild tensorboard` showed them beside the step runs (with
    # Guild's `sys/*` values mixed in by its summary plugins): a trial's curves
    # are its step runs' scalars, which Guild names and shows itself.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Tune's experiment state (every trial's state and the searcher's, for
    # Tuner.restore) is written whole every 10 s or more: about 14 KB a trial,
    # 14 MB at 1,000 trials, rewritten again and again (benchmarks/scale.py).
    # A tune restarts from its own journal (gpkg_ray.resume), not from it:
    # Tune writes it as the search starts, and once as it ends (forced).
    EXPERIMENT_STATE_PERIOD_ENV: "inf",
}
