"""Trial records: one Guild run per trial, so `guild compare` shows trials.

A trial's steps are separate Guild runs (`train`, `evaluate`), none of which holds
both the trial's values and its objective. A record run of op `gpkg.ray/trial`
does: its flags are the trial's values (every space entry), its scalar is the
objective, and it links to its step runs by step name (as Guild's own pipelines
do), so `guild ls`, `guild runs info` and `guild compare` see their files and
scalars too. The record is `running` while the trial runs (its LOCK holds the
tune process's pid), then `completed`, `terminated` (stopped early) or `error`.

    guild compare -Fo trial            one row per trial
    guild compare -Ft tune-<id>        the trials and step runs of one tune
    guild runs -Ft tune-<id>-best      the best trial and its step runs
    guild runs -Ft best                the best trials of every tune
"""

from __future__ import annotations

import os
from importlib import metadata

from gpkg_ray import guild_api
from gpkg_ray.listener import TuneListener
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Objective

RECORD_OP = "trial"
BEST_TAG = "best"


def _package_version() -> str:
    try:
        return metadata.version("gpkg.ray")
    except metadata.PackageNotFoundError:
        return "0"


class TrialRecords(TuneListener):
    """Keeps a record run per trial in GUILD_HOME."""

    def __init__(self, guild_home: str, objective: Objective, tags: list[str]):
        self.guild_home = guild_home
        self.objective = objective
        self.tags = list(tags)
        self._opref = guild_api.package_opref("gpkg.ray", _package_version(), RECORD_OP)

    def trial_started(self, outcome: TrialOutcome) -> None:
        """Creates the trial's record, or reopens it for the trial's next
        attempt (a retry, or a restart of the tune)."""
        record = self._record(outcome)
        if not os.path.isdir(record.dir):
            self._create(record, outcome)
        guild_api.mark_running(record, os.getpid())
        _link_step_runs(self.guild_home, record, outcome)

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
        _link_step_runs(self.guild_home, self._record(outcome), outcome)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        record = self._record(outcome)
        _link_step_runs(self.guild_home, record, outcome)
        if outcome.objective is not None:
            with guild_api.summary_writer(record.guild_path()) as writer:
                writer.add_scalar(self.objective.scalar, outcome.objective, 0)
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
            for run in [self._record(outcome), *self._step_runs(outcome)]:
                if is_best:
                    guild_api.set_tags(run, add=tags, remove=[])
                else:
                    guild_api.set_tags(run, add=[], remove=tags)

    @property
    def best_tags(self) -> list[str]:
        """`best` (the best trials of every tune: `guild runs -Ft best`), and
        one per tune (`-Ft tune-<id>-best`): Guild ORs repeated `-Ft`s, so
        `-Ft tune-<id> -Ft best` would list more than this tune's best."""
        return [BEST_TAG, *(f"{tag}-{BEST_TAG}" for tag in self.tags)]

    def _step_runs(self, outcome: TrialOutcome) -> list[guild_api.Run]:
        return [
            guild_api.open_run(self.guild_home, run_id)
            for run_id in outcome.runs.values()
            if guild_api.run_exists(self.guild_home, run_id)
        ]


def _link_step_runs(
    guild_home: str, record: guild_api.Run, outcome: TrialOutcome
) -> None:
    """Links `STEP` to each step run of this attempt (before Guild creates it),
    and `STEP~N` to the runs of earlier attempts (N = 1, 2, ... in the order
    they ran) that exist."""
    links = dict(outcome.runs)
    for i, (step, run_id) in enumerate(outcome.earlier_runs, 1):
        # Not to a run a kill cut before `guild run` created it.
        if guild_api.run_exists(guild_home, run_id):
            links[f"{step}~{i}"] = run_id
    for name, run_id in links.items():
        link = os.path.join(record.dir, name)
        target = os.path.join("..", run_id)
        if os.path.lexists(link) and os.readlink(link) != target:
            os.remove(link)
        if not os.path.lexists(link):
            os.symlink(target, link)


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
    if outcome.objective is not None:
        penalty = " (limit-penalty)" if outcome.penalized else ""
        lines.append(f"objective: {outcome.objective}{penalty}")
    if outcome.stop_reason:
        lines.append(f"stopped: {outcome.stop_reason}")
    lines += [f"{key}: {value}" for key, value in sorted(outcome.metrics.items())]
    if outcome.error:
        lines.append(f"error: {outcome.error}")
    return "\n".join(lines) + "\n"
