"""Main module of the `tune` operation (`main: gpkg_ray.tuner`): wires the stages.

    preparation   the run's op config and flags, checked; what earlier attempts
                  left; the seed (gpkg_ray.preparation)
    engine        the search on Ray, telling listeners what happens
                  (gpkg_ray.engine.driver)
    listeners     the journal (resume), trial records, progress and the live
                  report (results)
    results       at the end: trials.csv/trials.json, the tune's scalars, the
                  summary and the report

Nothing flows back from the engine but the trials' outcomes, and in the
StopRequest why it stopped early (a signal, or trials that all failed alike).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from gpkg_ray import faults
from gpkg_ray.errors import DiskFull, GpkgRayError, SpecError, is_disk_full

# Private names: Guild would read public module globals as flags if a project's
# op imported the tuner's flags (`flags-import: all` without `flags-dest: args`).
_EXIT_CONFIG_ERROR = 2
_EXIT_TUNE_FAILED = 1


def main() -> int:
    return run_tune_op(_check)


def run_tune_op(check, batch: bool = False) -> int:
    """Runs the tune `check()` gives (its run and its CheckedTune); exit
    status of the op. `batch`: a Guild batch's trials are its step runs (see
    gpkg_ray.optimizer), with no trial records of their own."""
    # A log line that cannot be written (a full disk) is no reason for a
    # traceback among the tune's lines: the tune says what went wrong.
    logging.raiseExceptions = False
    try:
        tune_run, checked = check()
    except GpkgRayError as e:
        return _error(e, _EXIT_CONFIG_ERROR)
    if checked.spec.settings.dry_run:
        return _dry_run(tune_run, checked)
    from gpkg_ray.engine.interrupts import StopRequest, exit_by_signal
    from gpkg_ray.results.trials import no_objective_reason

    stop = StopRequest()
    try:
        outcomes = _tune(tune_run, checked, stop, batch)
    except GpkgRayError as e:
        return _error(e, _EXIT_TUNE_FAILED)
    except OSError as e:
        if not is_disk_full(e):
            raise
        # A write of the tune's own (its journal stays whole: resume.journal).
        return _error(DiskFull(f"{e.strerror}: {e.filename}"), _EXIT_TUNE_FAILED)
    except KeyboardInterrupt:  # a second signal, or a stop before the search
        print("gpkg.ray: stopped", file=sys.stderr, flush=True)
        if stop.signal is not None:
            exit_by_signal(stop.signal)  # Guild records it `terminated`
        return _EXIT_TUNE_FAILED
    faults.point("tune-end")  # every result written, the run not yet ended
    if stop.signal is not None:
        exit_by_signal(stop.signal)  # the results so far are saved
    if stop.cluster_ended is not None:  # its SLURM job ended under it
        name = checked.cluster.name if checked.cluster else "NAME"
        print(
            f"gpkg.ray: {stop.cluster_ended}: its running trials were stopped; "
            f"once a new allocation is up (`guild remote start {name}`), "
            f"continue with `guild run --restart {tune_run.id}`",
            file=sys.stderr,
            flush=True,
        )
        return _EXIT_TUNE_FAILED
    if stop.failure is not None:  # its first trials all failed the same way
        print(f"gpkg.ray: {stop.failure}", file=sys.stderr, flush=True)
        return _EXIT_TUNE_FAILED
    reason = no_objective_reason(outcomes, checked.spec.plan.objective)
    if reason is not None:
        print(f"gpkg.ray: {reason}", file=sys.stderr, flush=True)
        return _EXIT_TUNE_FAILED
    return 0


def _dry_run(tune_run, checked) -> int:
    """`dry-run=yes`: prints what the tune would do; runs nothing."""
    from gpkg_ray import guild_api
    from gpkg_ray.dry_run import print_dry_run

    print_dry_run(tune_run, checked, guild_api.guild_home())
    return 0


def _error(e: GpkgRayError, exit_status: int) -> int:
    print(f"gpkg.ray: {e}", file=sys.stderr, flush=True)
    return exit_status


def _check():
    """The tune run and its checked tune (as the plugin checked it before the
    run existed: the cluster is asked again); raises GpkgRayError."""
    from gpkg_ray import guild_api
    from gpkg_ray.preparation import check_tune

    if not os.getenv("RUN_DIR"):
        raise SpecError("gpkg_ray.tuner runs as a Guild op: use `guild run tune`")
    if os.getenv("CMD_DIR"):
        # The op runs in its run dir; Guild reads ./guild-config.yml (the
        # remotes) from where the user ran `guild run`, as the plugin did.
        guild_api.set_cwd(os.environ["CMD_DIR"])
    tune_run = guild_api.current_run()
    opdef = guild_api.run_opdef(tune_run)
    if opdef is None:
        raise SpecError(f"cannot read the definition of op '{tune_run.opref.op_name}'")
    checked = check_tune(
        opdef,
        tune_run.get("flags") or {},
        tune_run.get("user_flags") or {},
        tune_run.opref,
        guild_api.guild_home(),
        tune_run_id=tune_run.id,
    )
    return tune_run, checked


def _tune(tune_run, checked, stop, batch: bool = False):
    from gpkg_ray import guild_api
    from gpkg_ray.engine.driver import run_tune
    from gpkg_ray.listener import Listeners
    from gpkg_ray.preparation import prepare_attempt
    from gpkg_ray.results.live_report import LiveReport
    from gpkg_ray.results.progress import ProgressPrinter, SearchHeader
    from gpkg_ray.results.records import BatchTrialRuns, TrialRecords
    from gpkg_ray.results.report import ReportPreload, TuneRun
    from gpkg_ray.resume.journal import Journal

    started = time.time()
    # Before Ray starts: what a killed attempt left is ended first.
    prepared = prepare_attempt(
        checked, tune_run.id, tune_run.dir, guild_api.guild_home()
    )
    # The tune run carries its runs' tag too, so that one filter finds the
    # tune and everything it made: `guild runs rm -Ft tune-<id>` removes them.
    guild_api.set_tags(tune_run, add=[prepared.tag], remove=[])
    spec, prior = prepared.spec, prepared.prior
    journal = Journal(tune_run.dir)
    records = (BatchTrialRuns if batch else TrialRecords)(
        prepared.guild_home,
        spec.plan.objective,
        [prepared.tag],
        objectives=spec.plan.objectives,
    )
    for outcome in prior.closed:
        journal.trial_ended(outcome)
    for outcome in prior.finished + prior.rerun:
        records.restore(outcome)
    for line in prior.lines(spec.settings.max_trials):
        print(line, flush=True)
    journal.attempt(prepared.attempt, seed=prepared.seed)
    faults.point("before-ray")
    new = []
    if prepared.trials_left:
        progress = ProgressPrinter(
            len(prior.finished) + prepared.trials_left,
            spec.plan.objective,
            [p.key for p in spec.plan.searched],
            finished=prior.finished,
            time_budget=spec.settings.time_budget,
            started=started,
            objectives=spec.plan.objectives,
        )
        live = LiveReport(
            tune_run.dir,
            spec,
            prepared.guild_home,
            TuneRun(tune_run.id, prepared.seed, prepared.attempt),
            spec.settings.report_every,
            earlier=prior.finished,
        )
        # The journal first: a kill between two listeners leaves it ahead.
        listener = Listeners(
            journal, records, SearchHeader(spec), progress, ReportPreload(), live
        )
        try:
            new = run_tune(prepared, listener, stop)
        finally:
            live.close()  # before the report at the end replaces its page
    else:
        print("Every trial has ended: nothing to run", flush=True)
    outcomes = prior.merged(new)
    _report(tune_run, prepared, records, outcomes)
    return outcomes


def _report(tune_run, prepared, records, outcomes) -> None:
    """The tune's results: the best trial tagged, trials.csv/json, the tune's
    scalars, the summary (ending with the values that mattered and the best
    trial's commands) and the report."""
    from gpkg_ray.engine.schedulers import unseen_progress_note
    from gpkg_ray.results.importance import importance
    from gpkg_ray.results.progress import print_note
    from gpkg_ray.results.summary import closing_lines, summary_lines
    from gpkg_ray.results.trials import (
        best_trial,
        log_tune_scalars,
        pareto_front,
        write_trials,
    )

    spec, prior = prepared.spec, prepared.prior
    objective = spec.plan.objective
    records.tag_best(best_trial(outcomes, objective), outcomes)
    if spec.plan.more_objectives:
        records.tag_pareto(pareto_front(outcomes, spec.plan.objectives), outcomes)
    meta: dict = {"seed": prepared.seed, "attempts": prior.attempt}
    if prior.warm_runs:
        meta["warm_start"] = {"runs": prior.warm_runs, "trials": len(prior.warm)}
    write_trials(tune_run.dir, outcomes, objective, meta, spec.plan)
    log_tune_scalars(tune_run.dir, outcomes, objective)
    searched = [p.key for p in spec.plan.searched]
    for line in summary_lines(outcomes, objective, searched, plan=spec.plan):
        print(line, flush=True)
    note = unseen_progress_note(spec, outcomes)
    if note:
        print_note(note)
    if outcomes:
        values = importance(outcomes, objective, list(spec.plan.searched))
        for line in closing_lines(outcomes, spec.plan, values):
            print(line, flush=True)
    _write_report(tune_run, prepared, outcomes)


def _write_report(tune_run, prepared, outcomes) -> None:
    """The plots and their page; a tune's results stand without them, so a
    failure here is a warning, not a failed tune."""
    from gpkg_ray.results.report import TuneRun, write_report

    if not outcomes:
        return
    tune = TuneRun(tune_run.id, prepared.seed, prepared.attempt)
    try:
        page = write_report(
            tune_run.dir, outcomes, prepared.spec, prepared.guild_home, tune
        )
    except Exception as e:  # matplotlib, a disk full, ...
        print(f"gpkg.ray: warning: report not written: {e}", file=sys.stderr)
        return
    relpath = os.path.relpath(page, tune_run.dir)
    print(
        f"Report: {relpath} (guild open {tune_run.short_id} -p {relpath})",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
