"""The tuning spec: what to tune, read from a `tune` op's `config:` and its flags.

    tune:
      main: gpkg_ray.tuner
      config:
        steps: [train, evaluate]         # ops of one trial, run in order
        optimize:
          - max: acc_val                 # or `evaluate#acc_val`
        space:
          lr: loguniform[1e-5:1e-1]      # to every step that defines `lr`
          train:epochs: 5                # to step `train` only
        scheduler-metric:                # what schedulers and limits watch
          max: train#val_acc             # (default: the objective)

`read_spec` checks everything before any work starts and raises `SpecError` with a
one-line message. The resulting `TuneSpec` is plain data: it holds no Guild
objects, so it can travel to Ray workers that do not share this filesystem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.objective import Objective, parse_objective
from gpkg_ray.tuning_spec.settings import Settings
from gpkg_ray.tuning_spec.space import (
    Domain,
    Fixed,
    Range,
    parse_value,
    resolve,
)
from gpkg_ray.tuning_spec.steps import Step, resolve_steps

_CONFIG_KEYS = ("steps", "optimize", "space", "scheduler-metric")


@dataclass(frozen=True)
class Param:
    key: str
    """The space key as written, e.g. `lr` or `train:epochs`."""
    domain: Domain
    targets: tuple[tuple[str, str], ...]
    """(step name, flag name) pairs that receive the value."""


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

    @property
    def searched(self) -> tuple[Param, ...]:
        """Params whose value varies between trials."""
        return tuple(p for p in self.params if not isinstance(p.domain, Fixed))

    def trial_values(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Every param's value in a trial: the sampled ones and the fixed ones."""
        return {
            p.key: p.domain.value if isinstance(p.domain, Fixed) else sampled[p.key]
            for p in self.params
        }

    def step_flags(self, step: str, sampled: dict[str, Any]) -> dict[str, Any]:
        values = self.trial_values(sampled)
        return {
            flag: values[p.key]
            for p in self.params
            for target_step, flag in p.targets
            if target_step == step
        }


@dataclass(frozen=True)
class TuneSpec:
    plan: TrialPlan
    settings: Settings


def load_spec(tune_opdef, settings: Settings) -> TuneSpec:
    """Spec of a tune op from its Guild op definition and run settings."""
    return read_spec(tune_opdef, settings)[0]


def read_spec(tune_opdef, settings: Settings) -> tuple[TuneSpec, tuple]:
    """Spec of a tune op, and the Guild op definition of each of its steps
    (what a cluster's nodes need of the project: see remote.source)."""
    config = _op_config(tune_opdef)
    steps, step_opdefs = resolve_steps(config.get("steps"), tune_opdef)
    step_names = [s.name for s in steps]
    objective = parse_objective(config.get("optimize"), step_names)
    scheduler_metric = objective
    if config.get("scheduler-metric") is not None:
        scheduler_metric = parse_objective(
            config["scheduler-metric"], step_names, "scheduler-metric"
        )
    params = _params(config.get("space"), steps)
    if settings.search == "grid":
        _check_grid(params)
    plan = TrialPlan(tuple(steps), tuple(params), objective, scheduler_metric)
    return TuneSpec(plan, settings), tuple(step_opdefs)


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


def _params(raw_space: Any, steps: list[Step]) -> list[Param]:
    if not raw_space:
        raise SpecError("config has no 'space': give at least one flag to search")
    if not isinstance(raw_space, dict):
        raise SpecError("'space' must map flag names to values or ranges")
    params = [_param(str(key), raw, steps) for key, raw in raw_space.items()]
    if not any(not isinstance(p.domain, Fixed) for p in params):
        raise SpecError(
            "'space' has only fixed values: give a list or a range to search"
        )
    return params


def _param(key: str, raw: Any, steps: list[Step]) -> Param:
    targets = _targets(key, steps)
    flagdefs = [
        (f"flag {flag} of {step_name}", _step(step_name, steps).flagdefs[flag])
        for step_name, flag in targets
    ]
    domain = resolve(key, parse_value(key, raw), flagdefs)
    return Param(key, domain, tuple(targets))


def _targets(key: str, steps: list[Step]) -> list[tuple[str, str]]:
    step_name, _, flag = key.rpartition(":")
    if step_name and any(s.name == step_name for s in steps):
        step = _step(step_name, steps)
        if flag not in step.flagdefs:
            raise SpecError(
                f"space entry '{key}': step {step_name} defines no flag '{flag}' "
                f"({_flag_list(step)})"
            )
        _check_not_pinned(key, step, flag)
        return [(step_name, flag)]
    targets = [(s.name, key) for s in steps if key in s.flagdefs]
    if not targets:
        raise SpecError(
            f"space entry '{key}': no step defines flag '{key}' "
            f"({'; '.join(f'{s.name}: {_flag_list(s)}' for s in steps)})"
        )
    for step_name, flag in targets:
        _check_not_pinned(key, _step(step_name, steps), flag)
    return targets


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
