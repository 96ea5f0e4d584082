"""Tuning spec: the first stage of a tune, a `tune` op's `config:` and flags
turned into a checked, plain-data `TuneSpec`.

    settings    the tune op's flags (their single definition)
    space       space entries in Guild's flag syntax -> domains
    objective   `optimize:` and `scheduler-metric:`
    steps       the trial's steps, resolved against the project's Guild ops
    overrides   space entries given on the command line (the `space` flag,
                step flags forced with --force-flags)
    plan        TrialPlan and TuneSpec, and `read_spec` that builds them
"""

from gpkg_ray.tuning_spec.objective import Objective, parse_objective
from gpkg_ray.tuning_spec.plan import Param, TrialPlan, TuneSpec, load_spec, read_spec
from gpkg_ray.tuning_spec.settings import Settings, flag_name
from gpkg_ray.tuning_spec.space import Choice, Domain, Fixed, Range
from gpkg_ray.tuning_spec.steps import Step

__all__ = [
    "Choice",
    "Domain",
    "Fixed",
    "Objective",
    "Param",
    "Range",
    "Settings",
    "Step",
    "TrialPlan",
    "TuneSpec",
    "flag_name",
    "load_spec",
    "parse_objective",
    "read_spec",
]
