"""The README's quickstart: the bundled example, run as the README says."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO, Project, check_report

pytestmark = pytest.mark.e2e  # real `guild` runs and Ray


def test_quickstart_example_runs_as_documented(tmp_path, guild_env):
    example = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", example)
    project = Project(example, guild_env)

    result = project.guild("run", "-y", "tune")  # README: `guild run -y tune`

    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 trials: 8 completed, 0 stopped, 0 failed" in result.stdout
    rows = project.compare("-Fo", "trial")  # README: `guild compare -Fo trial`
    assert len(rows) == 8
    best = max(rows, key=lambda row: float(row["acc_val"]))
    # README: `guild runs -Ft best`; nothing marked (issue 17 item 3)
    (tagged,) = project.compare("-Fo", "trial", "-Ft", "best")
    assert tagged["run"] == best["run"]
    assert project.compare("-Fm") == []
    assert 0 < float(best["acc_val"]) < 1
    check_report(Path(project.tune_run().dir), expect_curves=True)
    assert "Report: report/index.html (guild open " in result.stdout
    # README: `guild open -Fo tune -p report/index.html` (here with echo as the
    # browser, which prints the path it is given).
    opened = project.guild(
        "open", "-Fo", "tune", "-p", "report/index.html", "-c", "echo"
    )
    assert opened.returncode == 0, opened.stderr
    assert Path(opened.stdout.strip()) == Path(
        project.tune_run().dir, "report/index.html"
    )
