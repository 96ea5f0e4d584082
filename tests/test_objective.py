"""The `optimize` entry of a tune config."""

from __future__ import annotations

import pytest

from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.objective import Objective, parse_objective

STEPS = ["train", "evaluate"]


@pytest.mark.parametrize(
    ("raw", "objective"),
    [
        ([{"max": "acc_val"}], Objective("acc_val", "max", "evaluate")),
        ({"min": "loss"}, Objective("loss", "min", "evaluate")),
        ([{"min": "train#loss"}], Objective("loss", "min", "train")),
        ([{"max": "evaluate#val/acc"}], Objective("val/acc", "max", "evaluate")),
    ],
)
def test_parse_objective(raw, objective):
    assert parse_objective(raw, STEPS) == objective


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "config has no 'optimize'"),
        ([{"max": "a"}, {"min": "b"}], "lists 2 objectives; one is supported"),
        ([{"maximize": "a"}], "'optimize' uses 'maximize'"),
        (["acc"], "malformed 'optimize' entry"),
        ([{"max": ""}], "needs a scalar name"),
        ([{"max": "train#"}], "needs a scalar name"),
        ([{"max": "test#acc"}], "names step 'test', which is not in steps"),
    ],
)
def test_parse_objective_errors(raw, message):
    with pytest.raises(SpecError) as e:
        parse_objective(raw, STEPS)
    assert message in str(e.value)


def test_is_better():
    assert Objective("a", "max", "s").is_better(2, 1)
    assert not Objective("a", "max", "s").is_better(1, 2)
    assert Objective("a", "min", "s").is_better(1, 2)
    assert Objective("a", "min", "s").is_better(5, None)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_non_finite_value_never_ranks(mode):
    objective = Objective("a", mode, "s")
    for bad in (float("nan"), float("inf"), float("-inf")):
        assert not objective.is_better(bad, None)
        assert not objective.is_better(bad, 0.5)
        assert objective.is_better(0.5, bad)
