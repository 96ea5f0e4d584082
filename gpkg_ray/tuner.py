"""Main module of the `tune` operation (`main: gpkg_ray.tuner`).

Reads the tune spec from the running op's definition and flags, checks it before
any work starts, runs the search on Ray, and leaves its results in the tune run:
trial record runs in GUILD_HOME, `trials.csv`/`trials.json`, and scalars.
"""

from __future__ import annotations

# Guild reads flags from argparse when the main module imports it (flags-import).
import argparse
import os
import random
import sys
import textwrap
import time

from gpkg_ray.cluster import LOCAL, with_cluster_defaults
from gpkg_ray.errors import GpkgRayError, SpecError

EXIT_CONFIG_ERROR = 2
EXIT_TUNE_FAILED = 1
_ENGINE = "gpkg_ray.engine.ray_tune"
"""Ray Tune and the trainable: imported while the embedded Ray starts."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from gpkg_ray.tuning_spec.settings import add_arguments

    parser = argparse.ArgumentParser(
        prog="gpkg_ray.tuner", description="Tune hyperparameters with Ray Tune"
    )
    add_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    from gpkg_ray.tuning_spec import Settings

    # Flags first: Guild's flags import runs this module and stops at argparse.
    args = parse_args(argv)
    try:
        settings = Settings.from_args(args)
        tune_run, spec, opdef = _load(settings)
    except GpkgRayError as e:
        return _error(e, EXIT_CONFIG_ERROR)
    from gpkg_ray.engine.interrupts import StopRequest, exit_by_signal

    stop = StopRequest()
    try:
        outcomes = _tune(tune_run, spec, opdef, stop)
    except GpkgRayError as e:
        return _error(e, EXIT_TUNE_FAILED)
    except KeyboardInterrupt:  # a second signal, or Ctrl-C before the search
        print("gpkg.ray: stopped", file=sys.stderr, flush=True)
        return EXIT_TUNE_FAILED
    if stop.signal is not None:
        exit_by_signal(stop.signal)  # the results so far are saved
    completed = [o for o in outcomes if o.status == "completed"]
    return 0 if completed else EXIT_TUNE_FAILED


def _error(e: GpkgRayError, exit_status: int) -> int:
    print(f"gpkg.ray: {e}", file=sys.stderr, flush=True)
    return exit_status


def checked_spec(opdef, settings, opref):
    """The tune spec of `opdef`, with its cluster and warm start (runs of the op
    `opref`) checked; raises GpkgRayError.

    Also called by the Guild plugin before Guild creates the tune run.
    """
    from guild import config

    from gpkg_ray.cluster import check_cluster
    from gpkg_ray.resume.warm_start import earlier_tune_runs
    from gpkg_ray.tuning_spec import load_spec

    spec = load_spec(opdef, settings)
    check_cluster(spec.settings.cluster)
    earlier_tune_runs(spec.settings.warm_start, opref, config.guild_home())
    return spec


def _load(settings):
    """The tune run, its checked spec and op definition; raises GpkgRayError."""
    from guild import _api, config, run_util

    if not os.getenv("RUN_DIR"):
        raise SpecError("gpkg_ray.tuner runs as a Guild op: use `guild run tune`")
    if os.getenv("CMD_DIR"):
        # The op runs in its run dir; Guild reads ./guild-config.yml (the
        # remotes) from where the user ran `guild run`, as the plugin did.
        config.set_cwd(os.environ["CMD_DIR"])
    tune_run = _api.current_run()
    settings = with_cluster_defaults(settings, tune_run.get("user_flags") or {})
    opdef = run_util.run_opdef(tune_run)
    if opdef is None:
        raise SpecError(f"cannot read the definition of op '{tune_run.opref.op_name}'")
    return tune_run, checked_spec(opdef, settings, tune_run.opref), opdef


def _tune(tune_run, spec, opdef, stop):
    from guild import config

    tune = _Tune(tune_run, spec, opdef, config.guild_home())
    # Before Ray starts: what a killed attempt left is ended first.
    prior = tune.prior()
    seed = _seed(spec.settings, prior)
    tune.journal.attempt(prior.attempt, seed=seed)
    if prior.remaining(spec.settings.max_trials):
        new = tune.search(seed, prior, stop)
    else:
        print("Every trial has ended: nothing to run", flush=True)
        new = []
    outcomes = _merged(prior, new)
    tune.report(outcomes, {"seed": seed, **_meta(prior)})
    return outcomes


class _Tune:
    """One attempt of a tune run: where it writes, and its three phases."""

    def __init__(self, tune_run, spec, opdef, guild_home: str):
        from gpkg_ray.results.records import TrialRecords
        from gpkg_ray.resume.journal import Journal

        self.run = tune_run
        self.spec = spec
        self.opdef = opdef
        self.guild_home = guild_home
        self.tag = f"tune-{tune_run.short_id}"
        self.journal = Journal(tune_run.dir)
        self.records = TrialRecords(guild_home, spec.plan.objective, [self.tag])
        self.ray_dir = os.path.join(tune_run.dir, "ray")
        self.started = time.time()

    def prior(self):
        """What earlier attempts of this tune run left, and warm-start trials."""
        from gpkg_ray.resume.prior import load_prior
        from gpkg_ray.resume.warm_start import earlier_tune_runs, warm_trials

        settings = self.spec.settings
        prior = load_prior(
            self.run.dir, self.run.id, self.spec.plan, self.guild_home, self.tag
        )
        warm_runs = earlier_tune_runs(
            settings.warm_start, self.run.opref, self.guild_home, exclude=self.run.id
        )
        prior.warm = warm_trials(warm_runs)
        prior.warm_runs = [r.id for r in warm_runs]
        for outcome in prior.closed:
            self.journal.trial_ended(outcome)
        for outcome in prior.finished + prior.rerun:
            self.records.restore(outcome)
        for line in prior.lines(settings.max_trials):
            print(line, flush=True)
        return prior

    def search(self, seed: int, prior, stop):
        from gpkg_ray.engine.interrupts import handling_stops
        from gpkg_ray.engine.local_ray import embedded_ray
        from gpkg_ray.results.report import preload_in_background
        from gpkg_ray.resume.leftovers import attempt_processes

        os.makedirs(self.ray_dir, exist_ok=True)
        log_file = os.path.join(self.ray_dir, "driver.log")
        if self.spec.settings.cluster != LOCAL:
            return self._search_on_cluster(seed, prior, stop, log_file)
        # Ray is imported inside: the embedded Ray's loopback setting must come
        # first. Stop signals are handled once Ray has started (it sets a
        # SIGTERM handler).
        with (
            embedded_ray(log_file=log_file, preload=[_ENGINE]) as ray,
            handling_stops(stop),
        ):
            self.journal.ray_started(ray.temp_dir, attempt_processes(ray.processes))
            preload_in_background()
            return self._run_search(seed, prior, stop)

    def _search_on_cluster(self, seed: int, prior, stop, log_file: str):
        from gpkg_ray.engine.cluster_ray import cluster_session
        from gpkg_ray.engine.interrupts import handling_stops
        from gpkg_ray.remote.config import cluster_for_name
        from gpkg_ray.results.report import preload_in_background
        from gpkg_ray.tuning_spec.steps import find_opdef

        cluster = cluster_for_name(self.spec.settings.cluster)
        step_opdefs = [find_opdef(s.name, self.opdef) for s in self.spec.plan.steps]
        with (
            cluster_session(
                cluster, step_opdefs, self.guild_home, self.run.id, log_file
            ) as cluster_runs,
            handling_stops(stop),
        ):
            preload_in_background()
            return self._run_search(seed, prior, stop, cluster_runs)

    def _run_search(self, seed: int, prior, stop, cluster_runs=None):
        from gpkg_ray.engine.ray_tune import run_search
        from gpkg_ray.engine.schedulers import describe_scheduler
        from gpkg_ray.engine.searchers import build_search
        from gpkg_ray.results.progress import ProgressPrinter
        from gpkg_ray.trial.outcome import Listeners
        from gpkg_ray.trial.workspace import Workspace

        settings, plan = self.spec.settings, self.spec.plan
        workspace = Workspace(
            self.opdef.guildfile.dir,
            self.guild_home,
            # The tune run records the environment once; steps skip `pip freeze`.
            env={"NO_PIP_FREEZE": "1"},
        )
        search = build_search(self.spec, seed, prior)
        steps = ", ".join(s.name for s in plan.steps)
        print(f"Tuning {steps}: {plan.objective.describe()}", flush=True)
        print(
            f"Search: {settings.search}, seed {seed}, {search.num_samples} trials "
            f"on cluster={settings.cluster}",
            flush=True,
        )
        print(f"Scheduler: {describe_scheduler(self.spec)}", flush=True)
        if search.note:
            _print_note(search.note)
        progress = ProgressPrinter(
            len(prior.finished) + search.num_samples,
            plan.objective,
            [p.key for p in plan.searched],
            finished=prior.finished,
            time_budget=settings.time_budget,
            started=self.started,
        )
        # The journal first: a kill between two listeners leaves it ahead.
        listener = Listeners(self.journal, self.records, progress)
        return run_search(
            self.spec,
            search,
            workspace,
            listener,
            self.ray_dir,
            stop,
            [self.tag],
            prior,
            cluster_runs,
        )

    def report(self, outcomes, meta: dict) -> None:
        from gpkg_ray.engine.schedulers import unseen_progress_note
        from gpkg_ray.results.summary import summary_lines
        from gpkg_ray.results.trials import best_trial, log_tune_scalars, write_trials

        plan = self.spec.plan
        best = best_trial(outcomes, plan.objective)
        self.records.mark_best(best, outcomes)
        write_trials(self.run.dir, outcomes, plan.objective, meta)
        log_tune_scalars(self.run.dir, outcomes, plan.objective)
        searched = [p.key for p in plan.searched]
        for line in summary_lines(outcomes, plan.objective, searched):
            print(line, flush=True)
        note = unseen_progress_note(self.spec, outcomes)
        if note:
            _print_note(note)
        self._write_report(outcomes)

    def _write_report(self, outcomes) -> None:
        """The plots and their page; a tune's results stand without them, so a
        failure here is a warning, not a failed tune."""
        from gpkg_ray.results.report import write_report

        if not outcomes:
            return
        try:
            page = write_report(self.run.dir, outcomes, self.spec, self.guild_home)
        except Exception as e:  # matplotlib, a disk full, ...
            print(f"gpkg.ray: warning: report not written: {e}", file=sys.stderr)
            return
        relpath = os.path.relpath(page, self.run.dir)
        print(
            f"Report: {relpath} (guild open {self.run.short_id} -p {relpath})",
            flush=True,
        )


def _print_note(note: str) -> None:
    """A note, wrapped to 80 columns (the tune's output is read in terminals
    and in log files)."""
    print(textwrap.fill(f"Note: {note}", width=80, subsequent_indent="  "), flush=True)


def _seed(settings, prior) -> int:
    """The seed flag, else the first attempt's seed, else a random one."""
    if settings.seed is not None:
        return settings.seed
    if prior.seed is not None:
        return prior.seed
    return random.randrange(2**31)


def _merged(prior, new):
    """Every trial of the tune run, by number: this attempt's outcome of a
    trial wins over an earlier one."""
    by_number = {o.number: o for o in prior.finished + prior.rerun}
    by_number.update((o.number, o) for o in new)
    return [by_number[n] for n in sorted(by_number)]


def _meta(prior) -> dict:
    meta: dict = {"attempts": prior.attempt}
    if prior.warm_runs:
        meta["warm_start"] = {"runs": prior.warm_runs, "trials": len(prior.warm)}
    return meta


if __name__ == "__main__":
    sys.exit(main())
