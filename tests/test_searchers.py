"""Search algorithms: Ray domains and grid points from the spec's params."""

from __future__ import annotations

from ray.tune.search.sample import Categorical, Float, Integer

from gpkg_ray.engine.searchers import grid_points, ray_domain
from gpkg_ray.tuning_spec import Choice, Param, Range


def _param(key, domain):
    return Param(key, domain, (("train", key),))


def test_ray_domains():
    lr = ray_domain(_param("lr", Range(1e-5, 1e-1, log=True)))
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-5, 1e-1)
    layers = ray_domain(_param("layers", Range(1, 4, integer=True)))
    # Guild's integer bounds are inclusive, Ray's upper bound is exclusive.
    assert isinstance(layers, Integer) and (layers.lower, layers.upper) == (1, 5)
    act = ray_domain(_param("act", Choice(("relu", "tanh"))))
    assert isinstance(act, Categorical) and act.categories == ["relu", "tanh"]


def test_integer_samples_stay_within_inclusive_bounds():
    layers = ray_domain(_param("layers", Range(1, 3, integer=True)))
    assert set(layers.sample(size=300)) == {1, 2, 3}


def test_grid_points_are_the_product_of_the_choices():
    params = (
        _param("a", Choice((1, 2))),
        _param("b", Choice(("x", "y", "z"))),
    )
    points = grid_points(params)
    assert len(points) == 6
    assert points[0] == {"a": 1, "b": "x"}
    assert {(p["a"], p["b"]) for p in points} == {
        (a, b) for a in (1, 2) for b in ("x", "y", "z")
    }
