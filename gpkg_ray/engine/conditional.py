"""Conditional spaces on Optuna: a choice whose options carry entries of
their own (see tuning_spec.plan, Param.when).

Each trial asks Optuna for the entries of the options it took, in the space's
order (a choice before its options' entries): Optuna's define-by-run, which
Ray's OptunaSearch takes as a function. An entry of an option the trial did
not take is never sampled, so the searcher is told no value for it, and the
trial's steps get no flag for it (the flag keeps its Guild default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Choice, Fixed, Param, Range


def distribution(param: Param):
    """The Optuna distribution of a searched param."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    domain = param.domain
    if isinstance(domain, Choice):
        return CategoricalDistribution(list(domain.values))
    assert isinstance(domain, Range), domain
    if domain.integer:
        return IntDistribution(int(domain.low), int(domain.high), log=domain.log)
    return FloatDistribution(domain.low, domain.high, log=domain.log)


def active_values(params: Iterable[Param], values: dict[str, Any]) -> dict[str, Any]:
    """Of a trial's `values`, those of the searched entries its options make
    active; fixed entries count for the options, not in the result."""
    taken: dict[str, Any] = {}
    active: dict[str, Any] = {}
    for p in params:
        if not p.active(taken):
            continue
        if isinstance(p.domain, Fixed):
            taken[p.key] = p.domain.value
        elif p.key in values:
            taken[p.key] = active[p.key] = values[p.key]
    return active


class DefineByRun:
    """The space as a function of an Optuna trial: it samples the trial's
    active entries (Ray's OptunaSearch records what it samples). A class, not
    a closure: Ray Tune pickles its searcher, and with it this function."""

    def __init__(self, params: tuple[Param, ...]):
        self.params = params

    def __call__(self, trial) -> None:
        taken: dict[str, Any] = {}
        for p in self.params:
            if not p.active(taken):
                continue
            if isinstance(p.domain, Fixed):
                taken[p.key] = p.domain.value
            else:
                taken[p.key] = _suggest(trial, p)


def _suggest(trial, param: Param) -> Any:
    """A value of `param` from an Optuna trial, by its public `suggest_*`
    methods (which Ray's OptunaSearch watches to record the trial's config)."""
    domain = param.domain
    if isinstance(domain, Choice):
        return trial.suggest_categorical(param.key, list(domain.values))
    assert isinstance(domain, Range), domain
    if domain.integer:
        low, high = int(domain.low), int(domain.high)
        return trial.suggest_int(param.key, low, high, log=domain.log)
    return trial.suggest_float(param.key, domain.low, domain.high, log=domain.log)


def tell_define_by_run(
    study, params: tuple[Param, ...], values: dict[str, Any], outcome: TrialOutcome
) -> None:
    """Tells a trial that ended (an earlier attempt's, a warm start's) to the
    study, as searchers._tell tells one to a flat space's search: only the
    values of its active entries, with their distributions."""
    import optuna
    from optuna.trial import TrialState

    active = active_values(params, values)
    by_key = {p.key: p for p in params}
    distributions = {key: distribution(by_key[key]) for key in active}
    value = outcome.objective
    finite = value is not None and math.isfinite(value)
    intermediate = None
    if outcome.status == "stopped" and not outcome.penalized:
        state = TrialState.PRUNED
        intermediate = {0: value} if finite else None
    elif finite:
        state = TrialState.COMPLETE
    else:
        state = TrialState.FAIL
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=value if finite and state != TrialState.FAIL else None,
            params=active,
            distributions=distributions,
            intermediate_values=intermediate,
        )
    )
