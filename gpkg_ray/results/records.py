"""Trial records: one Guild run per trial, so `guild compare` shows trials.

A trial's steps are separate Guild runs (`train`, `evaluate`), none of which holds
both the trial's values and its objective. A record run of op `gpkg.ray/trial`
does: its flags are the trial's values (every space entry), and its scalars are
the objective and the last value of each step's scalars, by their plain names
(`record_scalars`), as the steps logged them. Its attr `step_runs` names the
step runs (`STEP`, and `STEP~N` for earlier attempts'), and a folder per step
links to that run's files, so `guild ls RECORD` shows them. The record is
`running` while the trial runs (its LOCK holds the tune process's pid), then
`completed`, `terminated` (stopped early) or `error`.

Not a link to each step run's directory, as Guild's pipelines link theirs:
Guild reads the scalars of every run a run links to, and names them by the
link (`evaluate/.guild#test_acc`) with their 32-bit noise (0.9638890027999878).

    guild compare -Fo trial            one row per trial
    guild compare -Ft tune-<id>        the trials and step runs of one tune
    guild runs -Ft tune-<id>-best      the best trial and its step runs
    guild runs -Ft best                the best trials of every tune
    guild runs -Ft tune-<id>-pareto    the Pareto front (several objectives)
"""

from __future__ import annotations

import glob
import os
from importlib import metadata

from gpkg_ray import faults, guild_api
from gpkg_ray.listener import TuneListener
from gpkg_ray.remote.run_tree import TMP_SUFFIX
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Objective

RECORD_OP = "trial"
BEST_TAG = "best"
PARETO_TAG = "pareto"
STEP_RUNS_ATTR = "step_runs"


def _package_version() -> str:
    try:
        return metadata.version("gpkg.ray")
    except metadata.PackageNotFoundError:
        return "0"


class TrialRecords(TuneListener):
    """Keeps a record run per trial in GUILD_HOME."""

    def __init__(
        self,
        guild_home: str,
        objective: Objective,
        tags: list[str],
        objectives: tuple[Objective, ...] = (),
    ):
        """`objectives`: every objective, with several (`objective` first)."""
        self.guild_home = guild_home
        self.objective = objective
        self.objectives = objectives or (objective,)
        self.tags = list(tags)
        self._opref = guild_api.package_opref("gpkg.ray", _package_version(), RECORD_OP)

    def trial_started(self, outcome: TrialOutcome) -> None:
        """Creates the trial's record, or reopens it for the trial's next
        attempt (a retry, or a restart of the tune)."""
        record = self._record(outcome)
        if not os.path.isdir(record.dir):
            self._create(record, outcome)
        guild_api.mark_running(record, os.getpid())
        _show_step_runs(self.guild_home, record, outcome)

    def restore(self, outcome: TrialOutcome) -> None:
        """Writes the record of a trial that ended in an earlier attempt, as it
        ended: after a kill, or in a Guild home the tune run was copied to."""
        record = self._record(outcome)
        if not os.path.isdir(record.dir):
            self._create(record, outcome)
        elif guild_api.exit_status(record) == _EXIT_STATUS[outcome.status]:
            return  # already as it ended
        self.trial_ended(outcome)

    def _record(self, outcome: TrialOutcome) -> guild_api.Run:
        return guild_api.open_run(self.guild_home, outcome.record)

    def _create(self, record: guild_api.Run, outcome: TrialOutcome) -> None:
        attrs = {
            "flags": outcome.values,
            "label": _label(self.tags, outcome.values),
            "tags": self.tags,
        }
        guild_api.init_run(record, self._opref, attrs)

    def trial_updated(self, outcome: TrialOutcome) -> None:
        _show_step_runs(self.guild_home, self._record(outcome), outcome)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        record = self._record(outcome)
        _show_step_runs(self.guild_home, record, outcome)
        _write_record_scalars(
            record, record_scalars(outcome, self.objective, self.objectives)
        )
        faults.point("record-write")  # its scalars written, not yet ended
        with open(record.guild_path("output"), "w") as f:
            f.write(_output_text(outcome))
        guild_api.close_run(record, _EXIT_STATUS[outcome.status])

    def tag_best(self, best: TrialOutcome | None, outcomes: list[TrialOutcome]) -> None:
        """Tags the best trial's record and step runs `best` and
        `tune-<id>-best`, and takes those tags off the other trials' runs (a
        resumed tune may have a new best).

        Not Guild's `marked` attr: Guild resolves an `operation:` dependency to
        a marked run first, in every project with an op of that name, so a mark
        made here changed what a plain `guild run evaluate` picked elsewhere.
        A tag changes no resolution; pinning the best is the user's choice
        (`guild run evaluate operation:train=RUN_ID`).
        """
        tags = self.best_tags
        for outcome in outcomes:
            is_best = outcome is best
            for run in self._runs_of(outcome):
                if is_best:
                    guild_api.set_tags(run, add=tags, remove=[])
                else:
                    guild_api.set_tags(run, add=[], remove=tags)

    def tag_pareto(
        self, front: list[TrialOutcome], outcomes: list[TrialOutcome]
    ) -> None:
        """Tags the records and step runs of the Pareto front's trials
        `pareto` and `tune-<id>-pareto` (and takes them off the others)."""
        tags = [PARETO_TAG, *(f"{tag}-{PARETO_TAG}" for tag in self.tags)]
        numbers = {o.number for o in front}
        for outcome in outcomes:
            on_front = outcome.number in numbers
            for run in self._runs_of(outcome):
                guild_api.set_tags(
                    run, add=tags if on_front else [], remove=[] if on_front else tags
                )

    @property
    def best_tags(self) -> list[str]:
        """`best` (the best trials of every tune: `guild runs -Ft best`), and
        one per tune (`-Ft tune-<id>-best`): Guild ORs repeated `-Ft`s, so
        `-Ft tune-<id> -Ft best` would list more than this tune's best."""
        return [BEST_TAG, *(f"{tag}-{BEST_TAG}" for tag in self.tags)]

    def _runs_of(self, outcome: TrialOutcome) -> list[guild_api.Run]:
        """The runs a trial's tags go on: its record and its step runs."""
        return [self._record(outcome), *self._step_runs(outcome)]

    def _step_runs(self, outcome: TrialOutcome) -> list[guild_api.Run]:
        return [
            guild_api.open_run(self.guild_home, run_id)
            for run_id in outcome.runs.values()
            if guild_api.run_exists(self.guild_home, run_id)
        ]


class BatchTrialRuns(TrialRecords):
    """The trials of a Guild batch (gpkg_ray.optimizer) are Guild's own trial
    runs, which hold the trial's flags and scalars themselves: no record runs;
    the best trial's run is tagged as a tune's best trial is."""

    def trial_started(self, outcome: TrialOutcome) -> None:
        pass

    def restore(self, outcome: TrialOutcome) -> None:
        pass

    def trial_updated(self, outcome: TrialOutcome) -> None:
        pass

    def trial_ended(self, outcome: TrialOutcome) -> None:
        pass

    def _runs_of(self, outcome: TrialOutcome) -> list[guild_api.Run]:
        return self._step_runs(outcome)


def record_scalars(
    outcome: TrialOutcome,
    objective: Objective,
    objectives: tuple[Objective, ...] = (),
) -> dict[str, float]:
    """The record's scalars: the objective, and the last value of each scalar
    of each step (`outcome.metrics`, `STEP/TAG`), by its tag (`loss`), as
    `guild compare` shows a run's scalars; a tag two steps log, or the
    objective's name logged by another step, as `STEP/TAG` (`train/loss`), as
    trials.json names them. Not `STEP#TAG`: Guild reads `#` in a column name as
    a prefix separator, so `guild compare -cc 'evaluate#loss'` would find
    nothing. The objective's own step scalar is the objective (which is the
    limit penalty for a trial stopped at a limit). With several `objectives`,
    each one by its name; with constraints, `feasible` (1 or 0)."""
    objectives = objectives or (objective,)
    values = outcome.objective_values()
    own = {}
    if len(values) == len(objectives):
        own = {o.scalar: v for o, v in zip(objectives, values, strict=True)}
    elif outcome.objective is not None:
        own = {objective.scalar: outcome.objective}
    own = {name: v for name, v in own.items() if v is not None}
    plain = {(o.step, o.scalar) for o in objectives if o.plain}
    names = {o.scalar for o in objectives}
    logged = [
        (*key.partition("/")[::2], value)
        for key, value in outcome.metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    steps_of: dict[str, set[str]] = {}
    for step, tag, _ in logged:
        steps_of.setdefault(tag, set()).add(step)
    scalars: dict[str, float] = dict(own)
    if outcome.violations is not None:
        scalars["feasible"] = float(outcome.feasible)
    for step, tag, value in logged:
        if (step, tag) in plain:
            continue
        shared = len(steps_of[tag]) > 1 or tag in names
        scalars[f"{step}/{tag}" if shared else tag] = value
    return scalars


def _write_record_scalars(record: guild_api.Run, scalars: dict[str, float]) -> None:
    """The record's scalars, those of an earlier attempt's end replaced (a
    step the retry did not reach has no value from the attempt before)."""
    for path in glob.glob(os.path.join(record.guild_path(), "*.tfevents.*")):
        os.remove(path)
    if scalars:
        guild_api.write_scalars(record.guild_path(), scalars)


def _named_step_runs(guild_home: str, outcome: TrialOutcome) -> dict[str, str]:
    """`STEP` -> the run of each step of this attempt (before Guild creates
    it), and `STEP~N` -> the runs of earlier attempts (N = 1, 2, ... in the
    order they ran) that exist (not one a kill cut before `guild run` made it)."""
    runs = dict(outcome.runs)
    for i, (step, run_id) in enumerate(outcome.earlier_runs, 1):
        if guild_api.run_exists(guild_home, run_id):
            runs[f"{step}~{i}"] = run_id
    return runs


def _show_step_runs(
    guild_home: str, record: guild_api.Run, outcome: TrialOutcome
) -> None:
    """Names the step runs in the record's `step_runs` attr, and links each
    one's files (those it has so far) from a folder of the step's name."""
    runs = _named_step_runs(guild_home, outcome)
    if record.get(STEP_RUNS_ATTR) != runs:
        record.write_attr(STEP_RUNS_ATTR, runs)
    _unlink_others(record.dir, runs)
    for name, run_id in runs.items():
        _link_run_files(guild_home, os.path.join(record.dir, name), run_id)


def _unlink_others(record_dir: str, runs: dict[str, str]) -> None:
    """Removes the links to runs that are not (or no longer) a step's, as
    when a retry's `train` takes the place of the first attempt's; and a link
    to a whole step run (the record of a tune started by an earlier gpkg.ray,
    and restarted by this one)."""
    for name in os.listdir(record_dir):
        path = os.path.join(record_dir, name)
        if os.path.islink(path):
            os.remove(path)
            continue
        if name == ".guild" or not os.path.isdir(path):
            continue
        target = _run_files_target(runs[name]) if name in runs else None
        for entry in os.listdir(path):
            link = os.path.join(path, entry)
            if os.path.islink(link) and (
                target is None
                or not os.readlink(link).startswith(target)
                or not os.path.exists(link)  # the file is gone from the run
            ):
                os.remove(link)
        if name not in runs and not os.listdir(path):
            os.rmdir(path)


def _run_files_target(run_id: str) -> str:
    """The start of the target of a link from `RECORD/STEP/` to a step run's file."""
    return os.path.join("..", "..", run_id) + os.sep


def _link_run_files(guild_home: str, step_dir: str, run_id: str) -> None:
    """Links each top-level file and folder of the run into `step_dir`, but
    for what would make Guild read the run's scalars as the record's: its
    `.guild`, event files, and runs it links to."""
    source = guild_api.run_dir(guild_home, run_id)
    os.makedirs(step_dir, exist_ok=True)
    try:
        entries = os.listdir(source)
    except OSError:  # not made yet (or a run that never was)
        return
    for entry in entries:
        path = os.path.join(source, entry)
        if (
            entry == ".guild"
            or ".tfevents." in entry
            or entry.endswith(TMP_SUFFIX)  # a file coming home, not yet whole
            or os.path.exists(os.path.join(path, ".guild", "opref"))
        ):
            continue
        link = os.path.join(step_dir, entry)
        if not os.path.lexists(link):
            os.symlink(_run_files_target(run_id) + entry, link)


# Guild shows a negative exit status as `terminated`, as for a run `guild stop` ends.
_EXIT_STATUS = {"completed": 0, "failed": 1, "stopped": guild_api.TERMINATED}


def _label(tags: list[str], values: dict) -> str:
    """Tags then flags, as Guild labels a tagged run."""
    return " ".join([*tags, *guild_api.flag_assigns(values)])


def _output_text(outcome: TrialOutcome) -> str:
    lines = [f"trial {outcome.number}: {outcome.status}"]
    if outcome.attempt > 1:
        lines.append(f"attempt {outcome.attempt}: {outcome.restart_reason}")
    reused = " (reused: an earlier attempt completed it)"
    lines += [
        f"{step} run: {run_id}" + (reused if step in outcome.reused else "")
        for step, run_id in outcome.runs.items()
    ]
    lines += [
        f"{step} run of an earlier attempt: {run_id}"
        for step, run_id in outcome.earlier_runs
    ]
    if outcome.objectives is not None:
        lines.append(f"objectives: {', '.join(map(str, outcome.objectives))}")
    elif outcome.objective is not None:
        penalty = " (limit-penalty)" if outcome.penalized else ""
        lines.append(f"objective: {outcome.objective}{penalty}")
    if outcome.violations is not None:
        feasible = "yes" if outcome.feasible else "no (breaks a constraint)"
        lines.append(f"feasible: {feasible}; violations: {outcome.violations}")
    if outcome.stop_reason:
        lines.append(f"stopped: {outcome.stop_reason}")
    lines += [f"{key}: {value}" for key, value in sorted(outcome.metrics.items())]
    if outcome.error:
        lines.append(f"error: {outcome.error}")
    return "\n".join(lines) + "\n"
