"""Space entries given on the command line: the `space` flag's items and step
flags forced with --force-flags (issue 17 item 5). Their merge into the
config's space is in test_spec."""

from __future__ import annotations

import pytest
from guild import flag_util

from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.overrides import (
    Override,
    forced_overrides,
    space_flag_overrides,
)


def test_the_space_flag_is_key_value_items_split_at_spaces_outside_brackets():
    text = (
        "lr=0.1  train:epochs=3 dropout=uniform[0:0.3] batch-size=[16, 32] "
        "act='leaky relu' seed=~"
    )

    assert space_flag_overrides(text) == [
        Override("lr", "0.1", "space"),
        Override("train:epochs", "3", "space"),
        Override("dropout", "uniform[0:0.3]", "space"),
        Override("batch-size", "[16, 32]", "space"),
        Override("act", "'leaky relu'", "space"),
        Override("seed", None, "space"),  # the flag's own choices or min/max
    ]


@pytest.mark.parametrize("text", [None, "", "   "])
def test_a_blank_space_flag_sets_nothing(text):
    assert space_flag_overrides(text) == []


def test_guild_passes_the_space_flag_as_one_string_that_starts_no_batch():
    """Guild starts a batch for a flag value that is a list or a flag function
    (run_impl._batch_opspec_for_flags); the space flag's value is neither."""
    for text in ("lr=[0.1,0.2]", "lr=loguniform[1e-4:1e-1]", "x=[0:1] y=range[1:3]"):
        value = flag_util.decode_flag_val(text, "string")
        assert value == text
        assert not flag_util.is_flag_function(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr", "flag space: 'lr' is not KEY=VALUE: write space='KEY=VALUE ...'"),
        ("=0.1", "flag space: '=0.1' is not KEY=VALUE"),
        ("lr=", "flag space: 'lr=' has no value: give a value, a list or a range"),
        (
            "lr=0.1,train:epochs=3",
            "flag space: the value of 'lr' holds an '=' (0.1,train:epochs=3): "
            "separate items with spaces",
        ),
        ("lr=0.1 lr=[0.1,0.2]", "flag space: 'lr' is given twice: give it once"),
    ],
)
def test_space_flag_errors(text, message):
    with pytest.raises(SpecError) as e:
        space_flag_overrides(text)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_flags_the_tune_op_does_not_define_are_forced_overrides():
    flags = {"max-trials": 4, "train:epochs": 3, "lr": 0.1, "space": None}

    assert forced_overrides(flags, ["max-trials", "space"]) == [
        Override("train:epochs", 3, "force-flags"),
        Override("lr", 0.1, "force-flags"),
    ]


def test_a_forced_flag_with_no_value_is_an_error():
    with pytest.raises(SpecError, match=r"flag 'lr' \(--force-flags\) has no value"):
        forced_overrides({"lr": ""}, [])
