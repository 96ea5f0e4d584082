"""The tune op's flags: Settings, its argparse form and the package guild.yml."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from gpkg_ray.errors import SpecError
from gpkg_ray.tuning_spec.settings import (
    SEARCH_ALGORITHMS,
    Settings,
    add_arguments,
    flag_name,
)

REPO_GUILDFILE = Path(__file__).resolve().parent.parent / "guild.yml"


def _package_tune_flags():
    data = yaml.safe_load(REPO_GUILDFILE.read_text())
    (config,) = [item for item in data if item.get("config") == "tune"]
    return config["operations"]["tune"]["flags"]


def test_package_tune_op_declares_every_setting_with_its_default():
    flags = _package_tune_flags()
    fields = {flag_name(f.name): f for f in dataclasses.fields(Settings)}
    assert set(flags) == set(fields)
    for name, field in fields.items():
        assert flags[name].get("default") == field.default, name
        assert flags[name]["description"].startswith(
            field.metadata["help"].split(" (")[0]
        )


def test_from_args_parses_what_guild_passes():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--max-trials", "5", "--search", "tpe", "--cpus", "0.5"])
    settings = Settings.from_args(args)
    assert settings == Settings(max_trials=5, search="tpe", cpus=0.5)


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
        ({"cpus": -1}, "cpus=-1 must be a number of 0 or more"),
        ({"cpus": 0, "gpus": 0}, "a trial must reserve some resource"),
        ({"search": "bayes"}, "unknown search 'bayes': use one of random, grid, tpe"),
    ],
)
def test_invalid_settings(flags, message):
    with pytest.raises(SpecError) as e:
        Settings.from_flags(flags)
    assert message in str(e.value)


def test_every_search_algorithm_has_a_builder():
    from gpkg_ray.engine.searchers import SEARCHERS

    assert set(SEARCHERS) == set(SEARCH_ALGORITHMS)
