"""The tune op's flags: Settings, and the package's guild.yml made from them."""

from __future__ import annotations

import dataclasses

import pytest
from guild import guildfile

from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.settings import SEARCH_ALGORITHMS, Settings, flag_name

NAN, INF = float("nan"), float("inf")


def test_a_tune_op_gets_a_flag_per_setting_from_the_installed_package(project):
    """The flags Guild gives a project's tune op (from the installed guild.yml,
    made from the Settings fields): every setting, with its default, type and
    description."""
    project.write(
        "guild.yml",
        """
        - model: ''
          extends: gpkg.ray/tune
          operations:
            train: {main: train, flags: {lr: 0.1}}
            tune: {config: {steps: [train], optimize: [{min: loss}], space: {}}}
        """,
    )
    tune_opdef = guildfile.for_dir(str(project.path)).models[""].get_operation("tune")
    flags = {f.name: f for f in tune_opdef.flags}
    fields = {flag_name(f.name): f for f in dataclasses.fields(Settings)}
    assert set(flags) == set(fields)
    for name, field in fields.items():
        assert flags[name].default == field.default, name
        assert flags[name].type == field.metadata["type"], name
        assert flags[name].description == field.metadata["help"], name
    assert Settings.from_flags({n: f.default for n, f in flags.items()}) == Settings()


def test_from_flags_ignores_other_flags_and_keeps_defaults():
    settings = Settings.from_flags({"max-trials": 3, "epochs": 10, "seed": None})
    assert settings == Settings(max_trials=3)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"max-trials": 0}, "max-trials=0 must be at least 1"),
        ({"max-trials": 2.5}, "max-trials=2.5 is not a whole number"),
        ({"max-concurrent": -1}, "max-concurrent=-1 must be at least 0"),
        ({"seed": -3}, "seed=-3 must be at least 0"),
        ({"fail-fast": -1}, "fail-fast=-1 must be at least 0"),
        ({"fail-fast": 1.5}, "fail-fast=1.5 is not a whole number"),
        ({"cpus": -1}, "cpus=-1 must be a finite number of 0 or more"),
        ({"cpus": 0, "gpus": 0}, "a trial must reserve some resource"),
        ({"search": "bayes"}, "unknown search 'bayes': use one of random, grid, tpe"),
        # Guild's float flags take nan and inf, and its `min:` lets them by.
        ({"cpus": NAN}, "cpus=nan must be a finite number of 0 or more"),
        ({"gpus": INF}, "gpus=inf must be a finite number of 0 or more"),
        ({"max-time": NAN}, "max-time=nan must be a finite number of 0 or more"),
        (
            {"max-time": INF},
            "max-time=inf must be a finite number of 0 or more (0 = no limit)",
        ),
        ({"time-budget": INF}, "time-budget=inf must be a finite number of 0 or"),
        ({"max-memory": NAN}, "max-memory=nan must be a finite number of 0 or more"),
        (
            {"scheduler": "asha", "reduction-factor": NAN},
            "reduction-factor=nan must be a finite number greater than 1",
        ),
        (
            {"scheduler": "asha", "reduction-factor": INF},
            "reduction-factor=inf must be a finite number greater than 1",
        ),
        ({"limit-penalty": NAN}, "limit-penalty=nan must be a finite number, or"),
        ({"limit-penalty": -INF}, "limit-penalty=-inf must be a finite number, or"),
    ],
)
def test_invalid_settings(flags, message):
    with pytest.raises(SpecError) as e:
        Settings.from_flags(flags)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_every_search_algorithm_has_a_builder():
    from gpkg_ray.engine.searchers import SEARCHERS

    assert set(SEARCHERS) == set(SEARCH_ALGORITHMS)
