"""Which searched values mattered: Optuna's PED-ANOVA on the finished trials.

PED-ANOVA (Watanabe et al., 2023) asks how differently each value is spread
among the best trials than among all of them: a value the best trials share
matters. It needs no extra package (fANOVA would need scikit-learn's random
forests), it is fast (milliseconds for hundreds of trials), and it gives
sensible answers from a handful of trials. The importances are normalized to
sum to 1.

Only completed trials with a finite objective count, and only those whose
values lie in today's space (a warm-start trial's may not): a trial stopped
early has a partial objective, not a result.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass

from gpkg_ray.results.trials import ranked_trials
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Choice, Objective, Param, Range

MIN_TRIALS = 4
"""Completed trials below which no importance is computed: with fewer, the
best trials are one or two, and any value looks important."""

METHOD = "PED-ANOVA"


@dataclass(frozen=True)
class Importance:
    """Each searched value's importance, most important first; or why none."""

    values: list[tuple[str, float]]
    trials: int
    """Completed trials it was computed from."""
    reason: str = ""
    """Why `values` is empty (too few trials, one value searched)."""


def importance(
    outcomes: list[TrialOutcome], objective: Objective, params: list[Param]
) -> Importance:
    """The importance of each param in `params` (the searched ones) for
    `objective`, from the completed trials of `outcomes`."""
    params = [p for p in params if isinstance(p.domain, Range | Choice)]
    trials = [
        o
        for o in ranked_trials(outcomes, objective)
        if all(p.domain.contains(o.values.get(p.key)) for p in params)
    ]
    if len(params) < 2:
        return Importance([], len(trials), "fewer than two values searched")
    if len(trials) < MIN_TRIALS:
        return Importance(
            [],
            len(trials),
            f"{len(trials)} completed trials; it needs at least {MIN_TRIALS}",
        )
    return Importance(_ped_anova(trials, objective, params), len(trials))


def _ped_anova(
    trials: list[TrialOutcome], objective: Objective, params: list[Param]
) -> list[tuple[str, float]]:
    import optuna

    PedAnovaImportanceEvaluator, get_param_importances = _import_ped_anova()
    logging.getLogger("optuna").setLevel(logging.WARNING)
    distributions = {p.key: _distribution(p) for p in params}
    study = optuna.create_study(
        direction="maximize" if objective.mode == "max" else "minimize"
    )
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={p.key: _optuna_value(p, o.values[p.key]) for p in params},
                distributions=distributions,
                value=o.objective,
            )
            for o in trials
        ]
    )
    with warnings.catch_warnings():
        # Optuna marks PED-ANOVA experimental; the user asked for nothing.
        warnings.simplefilter("ignore")
        scores = get_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator(), normalize=True
        )
    by_key = {key: float(value) for key, value in scores.items()}
    # In the space's order among equals: a stable, readable order.
    order = {p.key: i for i, p in enumerate(params)}
    return sorted(by_key.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def _import_ped_anova():
    """optuna.importance's evaluator and entry point. Optuna's package imports
    its fANOVA too, which imports scikit-learn and SciPy when they are there
    (guildai brings them): 4 s of the tune's end on 2 busy cores, for an
    evaluator not used. Hidden from that import (0.5 s), unless already in."""
    hidden = "sklearn" not in sys.modules
    if hidden:
        sys.modules["sklearn"] = None  # `import sklearn` raises ImportError
    try:
        from optuna.importance import (
            PedAnovaImportanceEvaluator,
            get_param_importances,
        )
    finally:
        if hidden:
            del sys.modules["sklearn"]
    return PedAnovaImportanceEvaluator, get_param_importances


def _distribution(param: Param):
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    domain = param.domain
    if isinstance(domain, Choice):
        return CategoricalDistribution([_categorical(v) for v in domain.values])
    if domain.integer:
        return IntDistribution(int(domain.low), int(domain.high), log=domain.log)
    return FloatDistribution(float(domain.low), float(domain.high), log=domain.log)


def _optuna_value(param: Param, value):
    domain = param.domain
    if isinstance(domain, Choice):
        return _categorical(value)
    return int(value) if domain.integer else float(value)


def _categorical(value):
    """Optuna's categories are None, bool, int, float or str."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def importance_line(result: Importance) -> str:
    """`Importance (PED-ANOVA, 12 trials): lr 0.71, dropout 0.22, ...` or
    why there is none."""
    if not result.values:
        return f"Importance: none ({result.reason})"
    values = ", ".join(f"{key} {value:.2f}" for key, value in result.values)
    return f"Importance ({METHOD}, {result.trials} trials): {values}"
