"""The installed `gpkg.ray` Guild package as Guild's own commands see it.

Its `guild.models` entry point names the package's model '' (`__anonymous__`);
without that model in the package's guild.yml every `guild` command that lists
models printed "ERROR: error initializing ... undefined model ''" (issue 17).
"""

from __future__ import annotations

import re

import pytest
from conftest import Project
from projects import tune_check_error, write_project

pytestmark = pytest.mark.e2e  # real `guild` commands


def _error_lines(result) -> list[str]:
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "ERROR" in line or "undefined model" in line
    ]


@pytest.mark.parametrize("command", [("ops",), ("ops", "--all"), ("models",)])
@pytest.mark.parametrize("where", ["empty dir", "project"])
def test_listing_prints_no_error(project: Project, command, where: str) -> None:
    if where == "project":
        write_project(project)
    result = project.guild(*command, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _error_lines(result) == []
    if command == ("ops", "--all") and where == "empty dir":
        # The package's base op, listed (its model '' is defined); a
        # project lists its own ops only.
        assert _package_op(project) in result.stdout
    if command[0] == "ops" and where == "project":
        # The project's tune op, which extends gpkg.ray/tune, is found.
        assert any(line.split()[:1] == ["tune"] for line in result.stdout.splitlines())


def test_package_op_says_how_to_use_it(project: Project) -> None:
    """`guild run gpkg.ray/tune` outside a project: one line on how to extend
    it, and no run."""
    op = _package_op(project)
    result = project.guild("run", "-y", op, timeout=60)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line]
    assert lines == [
        f"guild: {op} is a base op with no trials to run: in your project's "
        "guild.yml, a model with 'extends: gpkg.ray/tune' gives its tune op a "
        "config (steps, optimize, space); then 'guild run tune' (see the gpkg.ray "
        "README)"
    ]
    assert project.run_ids() == []


def _package_op(project: Project) -> str:
    """The package's base op as Guild names it: `gpkg.ray/tune`, or
    `gpkg-ray/tune` where pip normalized the distribution's name (a build with
    isolation, as `pip install .` does by default)."""
    result = project.guild("ops", "--all", timeout=60)
    (name,) = set(re.findall(r"^(gpkg[.-]ray/tune)\b", result.stdout, re.M))
    return name


def test_project_tune_is_the_projects_own(project: Project) -> None:
    """In a project that extends gpkg.ray/tune, `tune` is the project's op (with
    its config), not the package's base op."""
    write_project(project)
    assert tune_check_error(project, "max-trials=2") is None
