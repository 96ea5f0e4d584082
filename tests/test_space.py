"""Search space values in Guild's flag syntax."""

from __future__ import annotations

import pytest

from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.space import (
    Choice,
    Fixed,
    FlagDef,
    Range,
    parse_value,
    resolve,
)


@pytest.mark.parametrize(
    ("raw", "domain"),
    [
        ("loguniform[1e-5:1e-1]", Range(1e-5, 0.1, log=True)),
        ("uniform[0:0.5]", Range(0, 0.5)),
        ("[0:0.5]", Range(0, 0.5)),
        ("[1:10]", Range(1, 10, integer=True)),
        ("uniform[2:8]", Range(2, 8, integer=True)),
        ([32, 64, 128], Choice((32, 64, 128))),
        ("[relu, tanh]", Choice(("relu", "tanh"))),
        ("range[1:3]", Choice((1, 2, 3))),
        ("logspace[-3:-1:3]", Choice((0.001, 0.01, 0.1))),
        (5, Fixed(5)),
        ("relu", Fixed("relu")),
        ("1e-3", Fixed(0.001)),
        (None, None),
    ],
)
def test_parse_value(raw, domain):
    assert parse_value("x", raw) == domain


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("normal[0:1]", "unknown function 'normal[...]'"),
        ("uniform[1]", "uniform takes two bounds"),
        ("uniform[0:1:0.5]", "an initial value is not supported"),
        ("uniform[a:b]", "bound 'a' is not a number"),
        ("loguniform[0:1]", "loguniform bounds must be above 0"),
        ("uniform[3:3]", "needs low < high"),
        ([0.5], "list of one value (0.5)"),
        ([], "empty list"),
        ([[1, 2], 3], "nested value"),
        ({"a": 1}, "is a mapping"),
    ],
)
def test_parse_value_errors(raw, message):
    with pytest.raises(SpecError, match=None) as e:
        parse_value("x", raw)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_empty_value_takes_the_flags_choices():
    flagdef = FlagDef(choices=("adam", "sgd"))
    assert resolve("opt", None, [("flag opt of train", flagdef)]) == Choice(
        ("adam", "sgd")
    )


def test_empty_value_takes_the_flags_range_and_distribution():
    flagdef = FlagDef(min=1e-4, max=1e-1, log_scale=True, float_valued=True)
    domain = resolve("lr", None, [("flag lr of train", flagdef)])
    assert domain == Range(1e-4, 1e-1, log=True)


def test_empty_value_without_choices_or_range_is_an_error():
    with pytest.raises(SpecError, match="defines no choices or min/max"):
        resolve("lr", None, [("flag lr of train", FlagDef())])


def test_whole_number_bounds_sample_floats_for_a_float_flag():
    domain = resolve(
        "dropout", Range(0, 1, integer=True), [("f", FlagDef(float_valued=True))]
    )
    assert domain == Range(0.0, 1.0)
    assert not domain.integer


@pytest.mark.parametrize(
    ("domain", "flagdef", "message"),
    [
        (Range(0, 2), FlagDef(min=0, max=1), "2 is above the max 1 of flag"),
        (Range(-1, 1), FlagDef(min=0), "-1 is below the min 0 of flag"),
        (Choice((16, 48)), FlagDef(choices=(16, 32)), "48 not allowed by flag"),
        (Fixed(3), FlagDef(choices=(1, 2)), "3 not allowed by flag"),
        (Range(0, 1), FlagDef(choices=(0, 1)), "is a range but flag"),
    ],
)
def test_values_must_fit_the_flag_definition(domain, flagdef, message):
    with pytest.raises(SpecError) as e:
        resolve("x", domain, [("flag x of train", flagdef)])
    assert message in str(e.value)
