"""Search space: Guild's flag syntax in, parameter domains out.

A space value is written as a Guild user writes flag values:

    lr: loguniform[1e-5:1e-1]     continuous, log scale
    dropout: uniform[0:0.5]       continuous (also `[0:0.5]`, quoted in YAML)
    batch-size: [32, 64, 128]     a choice (a grid axis with `search=grid`)
    layers: range[1:4]            Guild's sequences expand to a choice
    epochs: 5                     fixed for every trial
    activation: ~                 the flag's own `choices`, or `min`/`max`
                                  (with its `distribution`), from its Guild definition

Guild's parser (`guild.flag_util`, through `gpkg_ray.guild_api`) decodes the
values. Bounds that are both whole numbers give whole-number samples unless the
flag is a float flag.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.errors import SpecError

# `[a:b]` is Guild's anonymous uniform. Guild's own decoder misses float bounds
# (YAML reads "[0:0.5]" as the sexagesimal list [0.5]), so it is matched here.
ANONYMOUS_RANGE = re.compile(r"^\[([^\[\]:,]+):([^\[\]:,]+)\]$")

_SEQUENCES = ("range", "linspace", "logspace")


@dataclass(frozen=True)
class Fixed:
    value: Any

    def describe(self) -> str:
        return guild_api.encode_flag_val(self.value)

    def contains(self, value: Any) -> bool:
        return value == self.value


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def describe(self) -> str:
        return guild_api.encode_flag_val(list(self.values))

    def contains(self, value: Any) -> bool:
        return value in self.values


@dataclass(frozen=True)
class Range:
    """A continuous (or whole-number) interval, sampled uniformly or on a log scale."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def describe(self) -> str:
        name = "loguniform" if self.log else "uniform"
        return f"{name}[{self.low}:{self.high}]"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and value != int(value):
            return False
        return self.low <= value <= self.high


Domain = Fixed | Choice | Range


@dataclass(frozen=True)
class FlagDef:
    """What a step's Guild op says about one of its flags."""

    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    log_scale: bool = False
    float_valued: bool = False
    """The flag is a float flag, or has a float default: sample floats."""


def parse_value(key: str, raw: Any) -> Domain | None:
    """Domain of a space value; None means "from the flag's Guild definition"."""
    if raw is None:
        return None
    if isinstance(raw, list):
        return _choice(key, raw)
    if isinstance(raw, dict):
        raise SpecError(
            f"space entry '{key}' is a mapping: give a value, a list or a range "
            "such as uniform[0:1]"
        )
    if isinstance(raw, str):
        return _parse_string(key, raw)
    return Fixed(raw)


def _parse_string(key: str, raw: str) -> Domain:
    text = raw.strip()
    anonymous = ANONYMOUS_RANGE.match(text)
    if anonymous:
        return _range(key, "uniform", [_number(key, x) for x in anonymous.groups()])
    try:
        name, args = guild_api.decode_flag_function(text)
    except ValueError:
        decoded = guild_api.decode_flag_val(text)
        return _choice(key, decoded) if isinstance(decoded, list) else Fixed(decoded)
    if name in _SEQUENCES:
        return _choice(key, _expand_sequence(key, text))
    if name in ("uniform", "loguniform") or name is None:
        return _range(key, name or "uniform", list(args))
    raise SpecError(
        f"space entry '{key}': unknown function '{name}[...]': use uniform[a:b], "
        "loguniform[a:b], [a:b], range[a:b:step], linspace[a:b:n] or logspace[a:b:n]"
    )


def _expand_sequence(key: str, text: str) -> list[Any]:
    try:
        values = guild_api.decode_flag_val(text)
    except (TypeError, ValueError) as e:
        raise SpecError(f"space entry '{key}': invalid {text}: {e}") from None
    if not isinstance(values, list):
        raise SpecError(f"space entry '{key}': invalid {text}")
    return values


def _choice(key: str, values: list[Any]) -> Choice:
    if not values:
        raise SpecError(f"space entry '{key}' is an empty list: list at least 2 values")
    if len(values) == 1:
        raise SpecError(
            f"space entry '{key}' is a list of one value ({values[0]!r}): for a range "
            "write uniform[a:b] (YAML reads an unquoted [a:b] as a number); for a "
            "fixed value drop the brackets"
        )
    for value in values:
        if isinstance(value, list | dict):
            raise SpecError(
                f"space entry '{key}' has a nested value {value!r}: list plain values"
            )
    return Choice(tuple(values))


def _range(key: str, name: str, args: list[Any]) -> Range:
    if len(args) != 2:
        raise SpecError(
            f"space entry '{key}': {name} takes two bounds, as in {name}[0.1:1] "
            "(an initial value is not supported)"
        )
    low, high = (_number(key, x) for x in args)
    if low >= high:
        raise SpecError(f"space entry '{key}': {name}[{low}:{high}] needs low < high")
    log = name == "loguniform"
    if log and low <= 0:
        raise SpecError(
            f"space entry '{key}': loguniform bounds must be above 0 "
            f"(got {low}): use uniform, or a positive lower bound"
        )
    integer = isinstance(low, int) and isinstance(high, int)
    return Range(low, high, log=log, integer=integer)


def _number(key: str, value: Any) -> int | float:
    if isinstance(value, str):
        value = guild_api.decode_flag_val(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"space entry '{key}': bound {value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"space entry '{key}': bound {value!r} is not finite")
    return value


def resolve(key: str, domain: Domain | None, flagdefs: list[tuple[str, FlagDef]]):
    """Completes a domain from the flags it targets and checks it fits each.

    `flagdefs` pairs a target description ("flag lr of train") with its
    definition. Returns the final domain.
    """
    if domain is None:
        target, first = flagdefs[0]
        domain = _domain_from_flagdef(key, target, first)
    floats_wanted = any(flagdef.float_valued for _, flagdef in flagdefs)
    if isinstance(domain, Range) and domain.integer and floats_wanted:
        domain = Range(float(domain.low), float(domain.high), domain.log, False)
    for target, flagdef in flagdefs:
        _check_fits(key, domain, target, flagdef)
    return domain


def _domain_from_flagdef(key: str, target: str, flagdef: FlagDef) -> Domain:
    if flagdef.choices:
        return Choice(flagdef.choices)
    if flagdef.min is not None and flagdef.max is not None:
        name = "loguniform" if flagdef.log_scale else "uniform"
        return _range(key, name, [flagdef.min, flagdef.max])
    raise SpecError(
        f"space entry '{key}' has no value and {target} defines no choices or "
        "min/max: give a value, a list or a range"
    )


def _check_fits(key: str, domain: Domain, target: str, flagdef: FlagDef) -> None:
    if isinstance(domain, Range):
        if flagdef.choices:
            raise SpecError(
                f"space entry '{key}' is a range but {target} only allows "
                f"{_fmt(flagdef.choices)}: list some of those values"
            )
        _check_bounds(key, (domain.low, domain.high), target, flagdef)
        return
    values = domain.values if isinstance(domain, Choice) else (domain.value,)
    if flagdef.choices:
        bad = [v for v in values if v not in flagdef.choices]
        if bad:
            raise SpecError(
                f"space entry '{key}': {_fmt(bad)} not allowed by {target} "
                f"(choices: {_fmt(flagdef.choices)})"
            )
    numbers = [v for v in values if isinstance(v, int | float)]
    _check_bounds(key, numbers, target, flagdef)


def _check_bounds(key, values, target: str, flagdef: FlagDef) -> None:
    for value in values:
        if flagdef.min is not None and value < flagdef.min:
            raise SpecError(
                f"space entry '{key}': {value} is below the min {flagdef.min} "
                f"of {target}"
            )
        if flagdef.max is not None and value > flagdef.max:
            raise SpecError(
                f"space entry '{key}': {value} is above the max {flagdef.max} "
                f"of {target}"
            )


def _fmt(values) -> str:
    return ", ".join(guild_api.encode_flag_val(v) for v in values)
