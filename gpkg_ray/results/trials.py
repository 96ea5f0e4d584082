"""The tune run's own results: the best trial, the trials table and its scalars."""

from __future__ import annotations

import csv
import json
import math
import os

from gpkg_ray import guild_api
from gpkg_ray.files import replaced
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Objective

TRIALS_CSV = "trials.csv"
TRIALS_JSON = "trials.json"


def has_objective(outcome: TrialOutcome) -> bool:
    """Whether the trial has an objective that ranks: a finite number (a NaN
    compares false with everything, and would pass for the best; a trial fails
    on one now, but a journal of an older gpkg.ray may hold one)."""
    return outcome.objective is not None and math.isfinite(outcome.objective)


def best_trial(
    outcomes: list[TrialOutcome], objective: Objective
) -> TrialOutcome | None:
    """The completed trial with the best objective (a trial stopped early has a
    partial objective, or a limit penalty, not a result)."""
    ranked = ranked_trials(outcomes, objective)
    return ranked[0] if ranked else None


def ranked_trials(
    outcomes: list[TrialOutcome], objective: Objective
) -> list[TrialOutcome]:
    """The completed trials with an objective, best first (the first of equals
    first)."""
    completed = [o for o in outcomes if o.status == "completed" and has_objective(o)]
    return sorted(completed, key=lambda o: o.objective, reverse=objective.mode == "max")


def write_trials(
    run_dir: str, outcomes: list[TrialOutcome], objective: Objective, meta: dict
) -> None:
    """`trials.csv` (a row per trial) and `trials.json` (the same, plus meta),
    each put in place whole (a restart writes them again)."""
    keys = sorted({key for o in outcomes for key in o.values})
    steps = sorted({step for o in outcomes for step in o.runs})
    with replaced(os.path.join(run_dir, TRIALS_CSV), newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "trial",
                "status",
                objective.scalar,
                *keys,
                *(f"{s}_run" for s in steps),
                "progress",
                "stopped",
                "error",
            ]
        )
        for o in outcomes:
            writer.writerow(
                [
                    o.number,
                    o.status,
                    "" if o.objective is None else o.objective,
                    *(o.values.get(k, "") for k in keys),
                    *(o.runs.get(s, "") for s in steps),
                    "" if o.progress is None else o.progress,
                    o.stop_reason or "",
                    o.error or "",
                ]
            )
    with replaced(os.path.join(run_dir, TRIALS_JSON)) as f:
        json.dump(
            {
                **meta,
                "objective": {
                    "scalar": objective.scalar,
                    "mode": objective.mode,
                    "step": objective.step,
                },
                "trials": [o.to_json() for o in outcomes],
            },
            f,
            indent=2,
            default=str,
        )


def log_tune_scalars(
    run_dir: str, outcomes: list[TrialOutcome], objective: Objective
) -> None:
    """Scalars of the tune run: the best objective and the trial counts."""
    best = best_trial(outcomes, objective)
    scalars = {} if best is None else {objective.scalar: best.objective}
    for status in ("completed", "failed", "stopped"):
        scalars[f"trials_{status}"] = count_status(outcomes, status)
    guild_api.write_scalars(os.path.join(run_dir, ".guild"), scalars)


def no_objective_reason(
    outcomes: list[TrialOutcome], objective: Objective
) -> str | None:
    """Why the tune failed, if no trial gave an objective (a completed trial,
    or one stopped early with a value or the limit penalty); None when one did.
    A tune fails only then: trials stopped by a scheduler or a limit are
    results, not failures."""
    if any(o.status != "failed" and has_objective(o) for o in outcomes):
        return None
    if not outcomes:
        return "no trial ran"
    failed = count_status(outcomes, "failed")
    stopped = len(outcomes) - failed
    return (
        f"no trial gave {objective.step}#{objective.scalar}: {failed} failed, "
        f"{stopped} stopped before it was recorded"
    )


def count_status(outcomes: list[TrialOutcome], status: str) -> int:
    return sum(1 for o in outcomes if o.status == status)
