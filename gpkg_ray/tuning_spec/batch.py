"""A Guild batch as a tune: `guild run train lr=loguniform[..] -o gpkg.ray/tpe`.

Guild makes a batch run of the optimizer op with the trial op's run as its
proto (`.guild/proto`): the proto's flags hold the search space as the user
typed it (a list, a flag function), and the batch run's attrs hold
`--max-trials`, `--random-seed` and the objective (`--maximize ACC` is
`-ACC`, `--minimize LOSS` and Guild's default `loss` as they are). This module
turns those into the tune op's TuneSpec: one step, the proto's op, whose
every flag is a param (a list or a range searched, any other value fixed),
checked as the tune op's space is. The optimizer's own flags (`-Fo NAME=VAL`)
are the tune op's settings, less those Guild's batch options stand for.

`BatchRequest` is plain data read from the runs (see gpkg_ray.optimizer), so
the mapping is checked in process without a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.objective import Objective
from gpkg_ray.tuning_spec.plan import Param, TrialPlan, TuneSpec
from gpkg_ray.tuning_spec.settings import Settings, guild_flagdefs
from gpkg_ray.tuning_spec.space import (
    ANONYMOUS_RANGE,
    Choice,
    Fixed,
    Range,
    parse_value,
    resolve,
)
from gpkg_ray.tuning_spec.steps import Step, step_flagdefs

DEFAULT_OBJECTIVE = "loss"
"""Guild's default objective (batch_util.DEFAULT_OBJECTIVE): minimized."""

SEARCHES = ("random", "grid", "tpe")
"""The optimizer ops, one per search: `gpkg.ray/random`, `gpkg.ray/grid`,
`gpkg.ray/tpe`."""


def optimizer_flag_names() -> list[str]:
    """The flags of the optimizer ops: the tune op's settings less BATCH_SETTINGS."""
    return list(guild_flagdefs(batch=True))


@dataclass(frozen=True)
class BatchRequest:
    """What a batch run of a gpkg.ray optimizer op asks for."""

    search: str
    """The optimizer op's name: random, grid or tpe."""
    opt_flags: dict[str, Any]
    """The batch run's flags: the optimizer's own (`-Fo NAME=VAL`)."""
    trial_op: str
    """The proto's op as Guild names it (`train`, `model:train`)."""
    proto_flags: dict[str, Any]
    """The proto run's flags: the space, as Guild resolved them."""
    objective: str | None = None
    """Guild's objective attr: `-NAME` maximizes NAME, `NAME` minimizes it."""
    max_trials: int | None = None
    random_seed: int | None = None
    given: tuple[str, ...] = ()
    """The optimizer's flags given (-Fo, or the op's optimizer in guild.yml),
    not defaults: a cluster's trial-cpus stand for `cpus` left out."""


def with_opt_flags(request: BatchRequest, flags: dict[str, Any]) -> BatchRequest:
    """`request` with the optimizer's `flags` set (over its own)."""
    from dataclasses import replace

    return replace(request, opt_flags={**request.opt_flags, **flags})


def batch_request(
    batch_run, proto, trial_op: str, default_optimizer=None
) -> BatchRequest:
    """What a batch run and its proto ask for (Guild runs, read).

    `default_optimizer`: (algorithm, flags) of the trial op's default
    optimizer. Its flags are the batch's, under those given with -Fo: Guild
    applies them with `--optimize`, but not when a flag function alone made
    this op the batch op (see plugin.resolve_model_op)."""
    search = batch_run.opref.op_name
    opt_flags = dict(batch_run.get("flags") or {})
    given = set(batch_run.get("user_flags") or {})
    if default_optimizer is not None:
        algorithm, flags = default_optimizer
        if algorithm.partition("/")[2] == search:
            opt_flags.update(flags)
            opt_flags.update(batch_run.get("user_flags") or {})
            given.update(flags)
    return BatchRequest(
        search=search,
        opt_flags=opt_flags,
        trial_op=trial_op,
        proto_flags=proto.get("flags") or {},
        objective=batch_run.get("objective"),
        max_trials=batch_run.get("max_trials"),
        random_seed=batch_run.get("random_seed"),
        given=tuple(sorted(given)),
    )


def batch_spec(
    request: BatchRequest, trial_opdef, batch_dir: str | None = None
) -> TuneSpec:
    """The tune spec of a batch; raises SpecError with one line.

    `trial_opdef` is the proto's Guild op definition (its flags' choices and
    bounds check the space); `batch_dir`, the batch run's directory, is where
    the trial runs are made from its proto (None: not known yet)."""
    if request.search not in SEARCHES:
        raise SpecError(
            f"unknown optimizer 'gpkg.ray/{request.search}': use one of "
            + ", ".join(f"gpkg.ray/{name}" for name in SEARCHES)
        )
    step = Step(
        request.trial_op,
        request.trial_op,
        step_flagdefs(trial_opdef),
        pipeline=bool(trial_opdef.steps),
        batch=batch_dir,
    )
    opt = f"gpkg.ray/{request.search}"
    try:
        params = tuple(
            _param(name, raw, step) for name, raw in request.proto_flags.items()
        )
    except SpecError as e:
        # The space checks' words are the tune op's (`space entry 'lr'`).
        message = re.sub(r"^space entry '([^']*)'", r"flag \1", str(e))
        raise SpecError(f"{opt}: {message}") from None
    searched = [p for p in params if not isinstance(p.domain, Fixed)]
    if not searched:
        raise SpecError(
            f"{opt}: no flag of {request.trial_op} is a list or a range: give one "
            "to search, e.g. lr=loguniform[1e-4:1e-1] or lr=[0.1,0.01]"
        )
    if request.search == "grid":
        _check_grid(searched, opt)
    objective = _objective(
        request.objective, request.trial_op, pipeline_steps(trial_opdef), opt
    )
    plan = TrialPlan((step,), params, objective, objective)
    settings = _settings(request, searched, opt)
    return TuneSpec(plan, settings)


def _param(name: str, raw: Any, step: Step) -> Param:
    """A proto flag as a param: Guild's list or flag function searched, any
    other value (None too) fixed, checked against the flag's definition."""
    targets = ((step.name, name),)
    if not isinstance(raw, list | str) or (
        isinstance(raw, str) and not _is_search_string(raw)
    ):
        # As the proto has it: Guild decoded it once (a string stays a string).
        return Param(name, Fixed(raw), targets)
    domain = parse_value(name, raw)
    flagdef = step.flagdefs.get(name)
    if flagdef is not None and domain is not None:
        domain = resolve(name, domain, [(f"flag {name} of {step.name}", flagdef)])
    return Param(name, domain, targets)


def _is_search_string(text: str) -> bool:
    """A flag function (`loguniform[a:b]`, `[a:b]`): what Guild leaves as a
    string in the proto's flags for an optimizer to read."""
    from gpkg_ray import guild_api

    if ANONYMOUS_RANGE.match(text.strip()):
        return True
    try:
        guild_api.decode_flag_function(text.strip())
    except ValueError:
        return False
    return True


def _check_grid(searched: list[Param], opt: str) -> None:
    for param in searched:
        if isinstance(param.domain, Range):
            raise SpecError(
                f"{opt}: flag {param.key}={param.domain.describe()} is a range: "
                "list values (e.g. logspace[-4:-1:4]), or use gpkg.ray/random or "
                "gpkg.ray/tpe"
            )


def _objective(
    raw: str | None, step: str, steps: list[str] | None, opt: str
) -> Objective:
    """Guild's objective attr: `-NAME` is maximized, `NAME` minimized. For a
    pipeline trial (`steps`: its step names), `STEP#NAME` is the scalar of
    that step's run (see trial.scalars.PipelineScalarWatcher), as the tune
    op's `optimize: [{max: STEP#NAME}]`; a plain NAME, the last step's that
    logs it."""
    text = (raw or DEFAULT_OBJECTIVE).strip()
    mode = "max" if text.startswith("-") else "min"
    scalar = text.lstrip("-").strip()
    if not scalar:
        raise SpecError(f"objective {raw!r} names no scalar: use --maximize NAME")
    step_name, hash_, tag = scalar.rpartition("#")
    if not hash_:
        return Objective(scalar=scalar, mode=mode, step=step)
    option = "--maximize" if mode == "max" else "--minimize"
    if steps is None:
        raise SpecError(
            f"{opt}: {option} {scalar} names step {step_name}, but {step} is "
            f"not a pipeline (a `steps` op): name its scalar alone, e.g. "
            f"{option} {tag}"
        )
    if step_name not in steps or not tag:
        raise SpecError(
            f"{opt}: {option} {scalar}: pipeline {step} has no step "
            f"'{step_name}' (its steps: {', '.join(steps)}): use {option} "
            "STEP#SCALAR"
        )
    return Objective(scalar=f"{step_link_name(step_name)}#{tag}", mode=mode, step=step)


def pipeline_steps(opdef) -> list[str] | None:
    """The step names of a `steps` op (a step's `name`, else what it runs),
    as Guild names them; None for an op that is not a pipeline."""
    if not opdef.steps:
        return None
    names = []
    for data in opdef.steps:
        if isinstance(data, str):
            data = {"run": data}
        if isinstance(data, dict):
            # `run: train lr=0.1` runs `train`: Guild names the step so.
            run = (str(data.get("run") or "").split() or [""])[0]
            names.append(str(data.get("name") or run))
    return names


def step_link_name(step: str) -> str:
    """The name of the link to a step's run in its pipeline's run directory,
    as Guild's steps_util makes it (` :/\\` made `-`)."""
    return re.sub(r"[ :/\\]", "-", step)


def _settings(request: BatchRequest, searched: list[Param], opt: str) -> Settings:
    flags = {
        name: value
        for name, value in request.opt_flags.items()
        if name in optimizer_flag_names()
    }
    flags["search"] = request.search
    max_trials = request.max_trials
    if max_trials is None and request.search == "grid":
        max_trials = _grid_size(searched)
    if max_trials is not None:
        flags["max-trials"] = max_trials
    if request.random_seed is not None:
        # Guild's seeds go to 2**32; Ray's searchers take 32-bit signed ones.
        flags["seed"] = int(request.random_seed) % 2**31
    try:
        return Settings.from_flags(flags)
    except SpecError as e:
        raise SpecError(f"{opt}: {_batch_wording(str(e))}") from None


def _grid_size(searched: list[Param]) -> int:
    size = 1
    for param in searched:
        assert isinstance(param.domain, Choice)
        size *= len(param.domain.values)
    return size


def _batch_wording(message: str) -> str:
    """A settings error in the words of Guild's batch options."""
    return message.replace("max-trials=", "--max-trials ").replace(
        "set max-trials=N", "set --max-trials N"
    )


def grid_trials(spec: TuneSpec) -> list[dict[str, Any]]:
    """The flags of each trial of a grid, in the order the grid runs them (as
    engine.searchers.grid_points orders its points), up to max-trials."""
    import itertools

    plan = spec.plan
    axes = [[(p.key, v) for v in p.domain.values] for p in plan.searched]
    points = [dict(point) for point in itertools.product(*axes)]
    return [plan.trial_values(point) for point in points[: spec.settings.max_trials]]
