"""Several objectives and constraints, told to Optuna through Ray's OptunaSearch.

With several objectives the searcher's metric is a list (`objective`,
`objective_2`, ...: see trial/result.py) and Optuna's study has a direction
per objective, so its samplers (TPE, NSGA-II) search for the Pareto front.
Constraints are set on each Optuna trial as it is told (Optuna 5's
`Trial.set_constraint`; its samplers, TPE and NSGA-II among them, rank
infeasible trials after the feasible ones).
"""

from __future__ import annotations

import math
from typing import Any

from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import VIOLATIONS, objective_key
from gpkg_ray.tuning_spec import TrialPlan


def optuna_metric(plan: TrialPlan) -> dict[str, Any]:
    """OptunaSearch's `metric` and `mode`: one, or a list with several
    objectives."""
    if not plan.more_objectives:
        return {"metric": objective_key(0), "mode": plan.objective.mode}
    return {
        "metric": [objective_key(i) for i in range(len(plan.objectives))],
        "mode": [o.mode for o in plan.objectives],
    }


def constraints(violations: list[float]) -> dict[str, float]:
    """Violations as Optuna names constraints: by their index."""
    return {str(i): float(v) for i, v in enumerate(violations)}


class ObjectivesMixin:
    """For Ray's OptunaSearch: a completed trial's violations set on its
    Optuna trial before it is told; a result without every objective (a trial
    stopped early, with several objectives) told as pruned, not as a
    complete trial with missing values (Optuna would refuse it and keep the
    trial running)."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        metric = self.metric
        metrics = metric if isinstance(metric, list) else [metric]
        if result and any(result.get(m) is None for m in metrics):
            result = None
        if result and result.get(VIOLATIONS) is not None:
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None:
                for key, value in constraints(result[VIOLATIONS]).items():
                    ot_trial.set_constraint(key, value)
        super().on_trial_complete(trial_id, result, error)


def tell_outcome(
    searcher, plan: TrialPlan, values: dict[str, Any], outcome: TrialOutcome
) -> bool:
    """Tells an earlier trial with several objectives or constraints to an
    OptunaSearch (whose own `add_evaluated_point` takes one value and no
    constraints). Returns False where the plain form serves (one objective,
    no constraints): the caller tells it."""
    if not plan.more_objectives and not plan.constraints:
        return False
    import optuna

    objectives = outcome.objective_values()
    ok = len(objectives) == len(plan.objectives) and all(
        v is not None and math.isfinite(v) for v in objectives
    )
    state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL
    told = None
    if ok and outcome.violations is not None:
        told = constraints(outcome.violations)
    trial = optuna.trial.create_trial(
        state=state,
        values=objectives if ok else None,
        params=values,
        distributions=searcher._space,
        constraints=told,
    )
    searcher._ot_study.add_trial(trial)
    return True
