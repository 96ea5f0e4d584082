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

from gpkg_ray.errors import GpkgRayError, SpecError

EXIT_CONFIG_ERROR = 2
EXIT_TUNE_FAILED = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from gpkg_ray.spec.settings import add_arguments

    parser = argparse.ArgumentParser(
        prog="gpkg_ray.tuner", description="Tune hyperparameters with Ray Tune"
    )
    add_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    from gpkg_ray.spec import Settings

    # Flags first: Guild's flags import runs this module and stops at argparse.
    args = parse_args(argv)
    try:
        settings = Settings.from_args(args)
        tune_run, spec, project_dir = _load(settings)
    except GpkgRayError as e:
        return _error(e, EXIT_CONFIG_ERROR)
    from gpkg_ray.engine.interrupts import StopRequest, exit_by_signal

    stop = StopRequest()
    try:
        outcomes = _tune(tune_run, spec, project_dir, stop)
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


def checked_spec(opdef, settings):
    """The tune spec of `opdef`, with its cluster checked; raises GpkgRayError.

    Also called by the Guild plugin before Guild creates the tune run.
    """
    from gpkg_ray.cluster import check_cluster
    from gpkg_ray.spec import load_spec

    spec = load_spec(opdef, settings)
    check_cluster(spec.settings.cluster)
    return spec


def _load(settings):
    """The tune run, its checked spec and project dir; raises GpkgRayError."""
    from guild import _api, run_util

    if not os.getenv("RUN_DIR"):
        raise SpecError("gpkg_ray.tuner runs as a Guild op: use `guild run tune`")
    tune_run = _api.current_run()
    opdef = run_util.run_opdef(tune_run)
    if opdef is None:
        raise SpecError(f"cannot read the definition of op '{tune_run.opref.op_name}'")
    return tune_run, checked_spec(opdef, settings), opdef.guildfile.dir


def _tune(tune_run, spec, project_dir: str, stop):
    from gpkg_ray.engine.interrupts import handling_stops
    from gpkg_ray.engine.local_ray import embedded_ray

    ray_dir = os.path.join(tune_run.dir, "ray")
    os.makedirs(ray_dir, exist_ok=True)
    # Ray is imported inside: the embedded Ray's loopback setting must come first.
    # Stop signals are handled once Ray has started (it sets a SIGTERM handler).
    with (
        embedded_ray(log_file=os.path.join(ray_dir, "driver.log")),
        handling_stops(stop),
    ):
        return _search(tune_run, spec, project_dir, ray_dir, stop)


def _search(tune_run, spec, project_dir: str, ray_dir: str, stop):
    from guild import config

    from gpkg_ray.engine.ray_tune import run_search
    from gpkg_ray.engine.schedulers import describe_scheduler, unseen_progress_note
    from gpkg_ray.engine.searchers import build_search
    from gpkg_ray.results.progress import ProgressPrinter
    from gpkg_ray.results.records import TrialRecords
    from gpkg_ray.results.report import (
        best_trial,
        log_tune_scalars,
        summary_lines,
        write_trials,
    )
    from gpkg_ray.trial.outcome import Listeners
    from gpkg_ray.trial.workspace import Workspace

    settings, plan = spec.settings, spec.plan
    seed = settings.seed if settings.seed is not None else random.randrange(2**31)
    guild_home = config.guild_home()
    tags = [f"tune-{tune_run.short_id}"]
    workspace = Workspace(
        project_dir,
        guild_home,
        # The tune run records the environment once; steps skip `pip freeze`.
        env={"NO_PIP_FREEZE": "1"},
    )
    search = build_search(spec, seed)
    print(
        f"Tuning {', '.join(s.name for s in plan.steps)}: {plan.objective.describe()}, "
        f"search={settings.search} seed={seed}, {search.num_samples} trials "
        f"on cluster={settings.cluster}",
        flush=True,
    )
    print(f"Scheduler: {describe_scheduler(spec)}", flush=True)
    if search.note:
        print(f"Note: {search.note}", flush=True)
    records = TrialRecords(guild_home, plan.objective, tags)
    listener = Listeners(records, ProgressPrinter(search.num_samples, plan.objective))
    outcomes = run_search(spec, search, workspace, listener, ray_dir, stop, tags)
    best = best_trial(outcomes, plan.objective)
    if best is not None:
        records.mark(best)
    write_trials(tune_run.dir, outcomes, plan.objective, {"seed": seed})
    log_tune_scalars(tune_run.dir, outcomes, plan.objective)
    for line in summary_lines(outcomes, plan.objective):
        print(line, flush=True)
    note = unseen_progress_note(spec, outcomes)
    if note:
        print(f"Note: {note}", flush=True)
    return outcomes


if __name__ == "__main__":
    sys.exit(main())
