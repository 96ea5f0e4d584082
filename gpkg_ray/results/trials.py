"""The tune run's own results: the best trial, the trials table and its scalars."""

from __future__ import annotations

import csv
import json
import math
import os

from gpkg_ray import guild_api
from gpkg_ray.files import replaced
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Objective, TrialPlan

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
    """The completed trials with an objective that keep every constraint,
    best first (the first of equals first). An infeasible trial is never the
    best, whatever its objective."""
    completed = [
        o
        for o in outcomes
        if o.status == "completed" and has_objective(o) and o.feasible
    ]
    return sorted(completed, key=lambda o: o.objective, reverse=objective.mode == "max")


def pareto_front(
    outcomes: list[TrialOutcome], objectives: tuple[Objective, ...]
) -> list[TrialOutcome]:
    """The completed, feasible trials no other such trial dominates (as good
    in every objective, better in one), ranked by the first objective. With
    one objective: its best trial (and its equals)."""
    ranked = ranked_trials(outcomes, objectives[0])
    scored = [
        (o, _signed(o, objectives))
        for o in ranked
        if len(o.objective_values()) == len(objectives)
        and all(v is not None and math.isfinite(v) for v in o.objective_values())
    ]
    return [
        o
        for o, mine in scored
        if not any(_dominates(theirs, mine) for _, theirs in scored)
    ]


def _signed(outcome: TrialOutcome, objectives: tuple[Objective, ...]) -> list[float]:
    """The objectives' values, each to be maximized."""
    return [
        v if o.mode == "max" else -v
        for v, o in zip(outcome.objective_values(), objectives, strict=True)
    ]


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and a != b


def write_trials(
    run_dir: str,
    outcomes: list[TrialOutcome],
    objective: Objective,
    meta: dict,
    plan: TrialPlan | None = None,
) -> None:
    """`trials.csv` (a row per trial) and `trials.json` (the same, plus meta),
    each put in place whole (a restart writes them again). With several
    objectives a column per objective and `pareto` (1: on the front); with
    constraints, `feasible` (from `plan`: by default `objective` alone)."""
    objectives = plan.objectives if plan else (objective,)
    constraints = plan.constraints if plan else ()
    keys = sorted({key for o in outcomes for key in o.values})
    steps = sorted({step for o in outcomes for step in o.runs})
    several = len(objectives) > 1
    front = {o.number for o in pareto_front(outcomes, objectives)}
    with replaced(os.path.join(run_dir, TRIALS_CSV), newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "trial",
                "status",
                *(o.scalar for o in objectives),
                *(["pareto"] if several else []),
                *(["feasible"] if constraints else []),
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
                    *_objective_cells(o, len(objectives)),
                    *([int(o.number in front)] if several else []),
                    *(_feasible_cell(o) if constraints else []),
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
                **(
                    {
                        "objectives": [
                            {"name": o.scalar, "mode": o.mode, "of": o.describe()}
                            for o in objectives
                        ],
                        "pareto_front": sorted(front),
                    }
                    if several
                    else {}
                ),
                **(
                    {"constraints": [c.describe() for c in constraints]}
                    if constraints
                    else {}
                ),
                "trials": [o.to_json() for o in outcomes],
            },
            f,
            indent=2,
            default=str,
        )


def _objective_cells(outcome: TrialOutcome, count: int) -> list:
    values = outcome.objective_values()
    if len(values) != count:  # stopped early: only the first, if any
        values = [outcome.objective] + [None] * (count - 1)
    return ["" if v is None else v for v in values]


def _feasible_cell(outcome: TrialOutcome) -> list:
    return ["" if outcome.violations is None else int(outcome.feasible)]


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
        f"no trial gave {_what(objective)}: {failed} failed, "
        f"{stopped} stopped before it was recorded"
    )


def _what(objective: Objective) -> str:
    if objective.plain:
        return f"{objective.step}#{objective.scalar}"
    return f"{objective.scalar} ({objective.describe()})"


def count_status(outcomes: list[TrialOutcome], status: str) -> int:
    return sum(1 for o in outcomes if o.status == status)
