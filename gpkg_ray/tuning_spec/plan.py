"""The tuning spec: what to tune, read from a `tune` op's `config:` and its flags.

    tune:
      main: gpkg_ray.tuner
      config:
        steps: [train, evaluate]         # ops of one trial, run in order
        optimize:
          - max: acc_val                 # or `evaluate#acc_val`; several
                                         # make a Pareto front (see objective)
        constraints:                     # optional: bounds a trial must keep
          - max: train#memory_mb
            limit: 2000
        space:
          lr: loguniform[1e-5:1e-1]      # to every step that defines `lr`
          train:epochs: 5                # to step `train` only
        scheduler-metric:                # what schedulers and limits watch
          max: train#val_acc             # (default: the objective)

The command line can set space entries for one tune over the config's (the
`space` flag, or step flags with --force-flags: see `overrides`); the config
is read, never written.

`read_spec` checks everything before any work starts and raises `SpecError` with a
one-line message. The resulting `TuneSpec` is plain data: it holds no Guild
objects, so it can travel to Ray workers that do not share this filesystem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.objective import (
    Constraint,
    Objective,
    parse_constraints,
    parse_objective,
    parse_objectives,
)
from gpkg_ray.tuning_spec.overrides import (
    Origin,
    Override,
    forced_overrides,
    space_flag_overrides,
)
from gpkg_ray.tuning_spec.settings import Settings
from gpkg_ray.tuning_spec.space import (
    Choice,
    Domain,
    Fixed,
    FlagDef,
    Range,
    parse_value,
    resolve,
)
from gpkg_ray.tuning_spec.steps import Step, UpstreamRun, resolve_steps

_CONFIG_KEYS = ("steps", "optimize", "constraints", "space", "scheduler-metric")


@dataclass(frozen=True)
class Param:
    key: str
    """The space key as written, e.g. `lr` or `train:epochs`."""
    domain: Domain
    targets: tuple[tuple[str, str], ...]
    """(step name, flag name) pairs that receive the value."""
    given: Origin | None = None
    """Set for this tune on the command line, over the config: by the `space`
    flag or by a step flag forced with --force-flags. None: from the config."""
    when: tuple[str, Any] | None = None
    """In a conditional space: (key, option) of the choice whose option holds
    this entry; it has a value only in trials where that choice (itself
    active) took that option. None: in every trial."""

    def active(self, values: dict[str, Any]) -> bool:
        """Whether this entry has a value in a trial whose entries before it
        (a choice comes before its options' entries) have `values`."""
        if self.when is None:
            return True
        key, option = self.when
        return key in values and values[key] == option


@dataclass(frozen=True)
class TrialPlan:
    """Everything a worker needs to run one trial, given its sampled values."""

    steps: tuple[Step, ...]
    params: tuple[Param, ...]
    objective: Objective
    scheduler_metric: Objective
    """The scalar a scheduler watches while a trial runs: by default the
    objective; set it to a scalar the training step logs each epoch when the
    objective comes from a later step."""
    upstream: tuple[UpstreamRun, ...] = ()
    """Runs from outside the trial its steps require, resolved once per tune
    (see gpkg_ray.upstream): set after the spec is read."""
    more_objectives: tuple[Objective, ...] = ()
    """The objectives after the first, with several (a Pareto front)."""
    constraints: tuple[Constraint, ...] = ()

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """Every objective, the first (`objective`) first: it ranks the trials
        of the Pareto front (the best trial is the front's best in it)."""
        return (self.objective, *self.more_objectives)

    @property
    def scored_at_end(self) -> bool:
        """Whether the trial's scores are known only once its steps ended:
        several objectives, a weighted one, a file or a wall time, or
        constraints; else the objective is a scalar known as it is logged."""
        return bool(self.more_objectives or self.constraints) or not (
            self.objective.plain
        )

    @property
    def searched(self) -> tuple[Param, ...]:
        """Params whose value varies between trials."""
        return tuple(p for p in self.params if not isinstance(p.domain, Fixed))

    @property
    def conditional(self) -> bool:
        """Some entries have values only in some trials (see Param.when)."""
        return any(p.when is not None for p in self.params)

    def trial_values(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Every param's value in a trial: the sampled ones and the fixed ones;
        in a conditional space, only those of the options the trial took (the
        others' flags keep their Guild defaults)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if not p.active(values):
                continue
            fixed = isinstance(p.domain, Fixed)
            values[p.key] = p.domain.value if fixed else sampled[p.key]
        return values

    def step_flags(self, step: str, sampled: dict[str, Any]) -> dict[str, Any]:
        """The flags `guild run STEP` is given in a trial with `sampled`: the
        space's values, and the runs from outside the trial it requires,
        pinned by their full run id."""
        values = self.trial_values(sampled)
        flags = {
            flag: values[p.key]
            for p in self.params
            if p.key in values
            for target_step, flag in p.targets
            if target_step == step
        }
        for run in self.upstream:
            given = flags.get(run.flag)
            if run.step == step and run.given == (
                None if given is None else str(given)
            ):
                flags[run.flag] = run.run_id
        return flags


@dataclass(frozen=True)
class TuneSpec:
    plan: TrialPlan
    settings: Settings


def load_spec(
    tune_opdef, settings: Settings, flags: dict[str, Any] | None = None
) -> TuneSpec:
    """Spec of a tune op from its Guild op definition and run settings."""
    return read_spec(tune_opdef, settings, flags)[0]


def read_spec(
    tune_opdef, settings: Settings, flags: dict[str, Any] | None = None
) -> tuple[TuneSpec, tuple]:
    """Spec of a tune op, and the Guild op definition of each of its steps
    (what a cluster's nodes need of the project: see remote.source).

    `flags` are the tune run's flag values: those the tune op does not define
    (given with --force-flags) set step flags, as `settings.space` does."""
    config = _op_config(tune_opdef)
    steps, step_opdefs = resolve_steps(config.get("steps"), tune_opdef)
    step_names = [s.name for s in steps]
    objectives = parse_objectives(config.get("optimize"), step_names)
    constraints = parse_constraints(config.get("constraints"), step_names)
    scheduler_metric = _scheduler_metric(
        objectives, config.get("scheduler-metric"), step_names, settings
    )
    overrides = space_flag_overrides(settings.space) + forced_overrides(
        flags or {}, (flag.name for flag in tune_opdef.flags)
    )
    params = _params(config.get("space"), steps, overrides)
    if settings.search == "grid":
        _check_grid(params)
    if settings.search == "cmaes":
        _check_cmaes(params)
    _check_conditional(settings.search, params)
    _check_objective_count(settings.search, params, objectives)
    plan = TrialPlan(
        tuple(steps),
        tuple(params),
        objectives[0],
        scheduler_metric,
        more_objectives=objectives[1:],
        constraints=constraints,
    )
    return TuneSpec(plan, settings), tuple(step_opdefs)


def _scheduler_metric(
    objectives: tuple[Objective, ...],
    raw: Any,
    step_names: list[str],
    settings: Settings,
) -> Objective:
    """What schedulers and limits watch: `scheduler-metric`, else the
    objective when it is one scalar a step logs. A scheduler watches one
    metric as it is logged: with several objectives, or a weighted one, it
    must be named."""
    if raw is not None:
        return parse_objective(raw, step_names, "scheduler-metric")
    if len(objectives) == 1 and objectives[0].plain:
        return objectives[0]
    if settings.scheduler != "fifo":
        what = (
            f"{len(objectives)} objectives"
            if len(objectives) > 1
            else f"objective {objectives[0].describe()}"
        )
        raise SpecError(
            f"scheduler={settings.scheduler} watches one scalar as a step logs "
            f"it, and {what} is not one: set config `scheduler-metric: "
            "{max: STEP#SCALAR}` (e.g. train#val_acc), or scheduler=fifo"
        )
    # Nothing watches it (fifo): the first objective that is a plain scalar.
    return next((o for o in objectives if o.plain), objectives[0])


def _op_config(opdef) -> dict[str, Any]:
    config = guild_api.op_config(opdef)
    if config is None:
        package = guild_api.package_of_op(opdef)
        if package is not None and re.sub(r"[._]", "-", package) == "gpkg-ray":
            # `guild run gpkg.ray/tune`: the package's base op, which only a
            # project's op that extends it gives steps to run.
            raise SpecError(
                f"{package}/{opdef.name} is a base op with no trials to run: in your "
                "project's guild.yml, a model with 'extends: gpkg.ray/tune' "
                "gives its tune op a config (steps, optimize, space); then "
                "'guild run tune' (see the gpkg.ray README)"
            )
        raise SpecError(
            f"op '{opdef.name}' has no 'config': add config with steps, optimize "
            "and space (see the gpkg.ray README)"
        )
    if not isinstance(config, dict):
        raise SpecError(f"'config' of op '{opdef.name}' must be a mapping")
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise SpecError(
            f"unknown key '{unknown[0]}' in config: use {', '.join(_CONFIG_KEYS)}"
        )
    return config


def _params(
    raw_space: Any, steps: list[Step], overrides: list[Override]
) -> list[Param]:
    if not raw_space:
        raise SpecError("config has no 'space': give at least one flag to search")
    if not isinstance(raw_space, dict):
        raise SpecError("'space' must map flag names to values or ranges")
    params = _space_params(raw_space, steps, None)
    _check_unique(params)
    params = _merge(params, [_override_param(o, steps) for o in overrides])
    if not any(not isinstance(p.domain, Fixed) for p in params):
        given = " ".join(f"{p.key}={p.domain.describe()}" for p in params if p.given)
        with_given = f" with the command line's {given}" if given else ""
        raise SpecError(
            f"'space' has only fixed values{with_given}: give a list or a range "
            "to search"
        )
    return params


def _space_params(
    raw_space: dict, steps: list[Step], when: tuple[str, Any] | None
) -> list[Param]:
    """The params of a space mapping, each choice with options of their own
    entries (a conditional space) followed by those entries."""
    params = []
    for key, raw in raw_space.items():
        key = str(key)
        if not isinstance(raw, dict):
            params.append(replace(_param(key, raw, steps), when=when))
            continue
        # A choice whose options carry their own entries:
        #   optimizer: {adam: {beta1: uniform[0.8:0.99]}, sgd: {momentum: ...}}
        if len(raw) < 2:
            raise SpecError(
                f"space entry '{key}' has one option ({', '.join(map(str, raw))}): "
                "give two or more, or write its entries beside it"
            )
        params.append(replace(_param(key, list(raw), steps), when=when))
        for option, sub_space in raw.items():
            if sub_space is None:
                continue
            if not isinstance(sub_space, dict):
                raise SpecError(
                    f"space entry '{key}': option '{option}' holds "
                    f"{sub_space!r}: give the option's own entries as a mapping "
                    f"(e.g. {option}: {{FLAG: VALUE}}), or nothing"
                )
            params += _space_params(sub_space, steps, (key, option))
    return params


def _check_unique(params: list[Param]) -> None:
    seen = set()
    for p in params:
        if p.key in seen:
            raise SpecError(
                f"space entry '{p.key}' is given twice in a conditional space: give "
                "it once, or as STEP:FLAG in one of the options"
            )
        seen.add(p.key)


def _override_param(override: Override, steps: list[Step]) -> Param:
    """The param of an entry given on the command line; its errors say where
    it was given."""
    where = override.where()
    unknown = _no_such_flag(override.key, steps)
    if unknown:
        fix = "set a step's flag, as FLAG=VALUE or STEP:FLAG=VALUE for one step"
        if override.origin == "force-flags":
            fix = "drop it, or name a step's flag (STEP:FLAG for one step)"
        raise SpecError(f"{where}: {unknown}: {fix}")
    try:
        param = _param(override.key, override.value, steps)
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None
    return replace(param, given=override.origin)


def _given_as(param: Param) -> str:
    if param.given == "space":
        return f"{param.key} in flag space"
    return f"{param.key} with --force-flags"


def _merge(config: list[Param], given: list[Param]) -> list[Param]:
    """The config's params with the command line's over them: a given entry
    takes the step flags it targets from the config's entries (an entry of the
    same key is replaced where it stood, one left with no target is dropped);
    two given entries may not target the same step flag."""
    owner: dict[tuple[str, str], Param] = {}
    for param in given:
        for target in param.targets:
            if target in owner:
                raise SpecError(
                    f"flag {target[1]} of {target[0]} is set twice on the command "
                    f"line ({_given_as(owner[target])}, {_given_as(param)}): set "
                    "it once"
                )
            owner[target] = param
    by_key = {p.key: p for p in given}
    merged = []
    for param in config:
        if param.key in by_key:
            merged.append(replace(by_key.pop(param.key), when=param.when))
            continue
        kept = tuple(t for t in param.targets if t not in owner)
        if kept:
            merged.append(replace(param, targets=kept))
    return merged + list(by_key.values())


def _param(key: str, raw: Any, steps: list[Step]) -> Param:
    targets = _targets(key, steps)
    if all(flag in _step(step, steps).requires for step, flag in targets):
        return Param(key, _run_ids(raw), tuple(targets))
    flagdefs = [
        # A dependency flag (a run id) has no Guild flag definition.
        (f"flag {flag} of {step_name}", _step(step_name, steps).flagdefs.get(flag))
        for step_name, flag in targets
    ]
    flagdefs = [(what, flagdef or FlagDef()) for what, flagdef in flagdefs]
    domain = resolve(key, parse_value(key, raw), flagdefs)
    return Param(key, domain, tuple(targets))


def _run_ids(raw: Any) -> Domain:
    """A dependency flag's value: a run id (or a prefix of one), or a list of
    them to search over, as text: a prefix of digits is no number."""
    if isinstance(raw, list):
        return Choice(tuple(str(value) for value in raw))
    return Fixed(str(raw))


def _targets(key: str, steps: list[Step]) -> list[tuple[str, str]]:
    unknown = _no_such_flag(key, steps)
    if unknown:
        raise SpecError(f"space entry '{key}': {unknown}")
    step_name, _, flag = key.rpartition(":")
    if step_name and any(s.name == step_name for s in steps):
        _check_not_pinned(key, _step(step_name, steps), flag)
        return [(step_name, flag)]
    targets = [(s.name, key) for s in steps if key in _settable(s)]
    for step_name, flag in targets:
        _check_not_pinned(key, _step(step_name, steps), flag)
    return targets


def _no_such_flag(key: str, steps: list[Step]) -> str | None:
    """What is wrong with space key `key` when it names no step's flag."""
    step_name, _, flag = key.rpartition(":")
    if step_name and any(s.name == step_name for s in steps):
        step = _step(step_name, steps)
        if flag in step.flagdefs:
            return None
        return f"step {step_name} defines no flag '{flag}' ({_flag_list(step)})"
    if any(key in _settable(s) for s in steps):
        return None
    flags = "; ".join(f"{s.name}: {_flag_list(s)}" for s in steps)
    return f"no step defines flag '{key}' ({flags})"


def _settable(step: Step) -> set[str]:
    """What a space entry may set on `step`: its flags, and its dependency
    flags for runs from outside the trial (`operation:prepare: RUN_ID` pins
    the run its op requires)."""
    return set(step.flagdefs) | set(step.requires)


def _check_not_pinned(key: str, step: Step, flag: str) -> None:
    if flag in step.pins:
        raise SpecError(
            f"space entry '{key}': {flag} of {step.name} is set by the trial to its "
            f"own {step.pins[flag]} run"
        )


def _step(name: str, steps: list[Step]) -> Step:
    return next(s for s in steps if s.name == name)


def _flag_list(step: Step) -> str:
    return ", ".join(sorted(step.flagdefs)) or "no flags"


def _check_grid(params: list[Param]) -> None:
    for p in params:
        if isinstance(p.domain, Range):
            raise SpecError(
                f"search=grid: space entry '{p.key}' is a range "
                f"({p.domain.describe()}): list values, e.g. with logspace[..] or "
                "linspace[..], or use search=random or tpe"
            )


def _check_cmaes(params: list[Param]) -> None:
    """CMA-ES samples ranges only: Optuna samples a choice at random beside
    it, which a user who asked for CMA-ES would not expect."""
    for p in params:
        if isinstance(p.domain, Choice):
            raise SpecError(
                f"search=cmaes: space entry '{p.key}' is a choice "
                f"({p.domain.describe()}) and CMA-ES searches ranges only: give "
                "it a range (whole-number bounds give whole numbers), fix it, or "
                "use search=tpe or gp"
            )


def _check_objective_count(
    search: str, params: list[Param], objectives: tuple[Objective, ...]
) -> None:
    """CMA-ES and a conditional space's define-by-run study take one
    objective; the others search for a Pareto front (or ignore objectives)."""
    if len(objectives) < 2:
        return
    if search == "cmaes":
        raise SpecError(
            f"search=cmaes searches one objective and optimize names "
            f"{len(objectives)}: use search=tpe or nsga2, or weight them into "
            "one (see 'Weighted objectives' in the guide)"
        )
    if any(p.when for p in params):
        raise SpecError(
            f"a conditional space searches one objective and optimize names "
            f"{len(objectives)}: weight them into one (see 'Weighted "
            "objectives' in the guide), or make the space flat"
        )


CONDITIONAL_SEARCHES = ("random", "tpe", "nsga2")
"""Searches that serve a conditional space: Optuna's samplers that sample each
trial's own entries (define-by-run). Grid has no such points; GP, CMA-ES and
QMC model a fixed set of values and would sample the others at random."""


def _check_conditional(search: str, params: list[Param]) -> None:
    if search in CONDITIONAL_SEARCHES:
        return
    for p in params:
        if p.when is not None:
            raise SpecError(
                f"search={search} cannot search a conditional space (entry "
                f"'{p.key}' belongs to option {p.when[1]} of '{p.when[0]}'): use "
                f"search={', '.join(CONDITIONAL_SEARCHES)}"
            )
