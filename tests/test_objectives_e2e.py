"""Several objectives, a weighted one with a wall time, values from a run
file, and a constraint, in one real tune (`guild run tune`, real Ray and
Optuna's NSGA-II), read by several small checks: the Pareto front is found
(summary, records, trials.csv, report), every objective shows in `guild
compare`, and the trials that break the constraint are kept, shown as
infeasible and never best. Parsing, scores, NaN and missing files are checked
in this process in test_objectives.py."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest
from conftest import PNG_SIGNATURE, Project
from projects import write_project

pytestmark = pytest.mark.e2e  # real `guild` runs and Ray

# acc_val is 1 - lr (see projects.py); `rate` is lr from train's model.json,
# less a little per hour of train: the two conflict, so every feasible trial
# of a distinct lr may be on the front. An lr (model.json) over 0.04 breaks
# the constraint.
CONFIG = """
steps: [train, evaluate]
optimize:
  - max: acc_val
  - max: {train#model.json:lr: 1, train#wall-hours: -0.001}
    name: rate
constraints:
  - max: train#model.json:lr
    limit: 0.04
space:
  lr: [0.01, 0.03, 0.05]
  batch-size: [16, 64]
"""
TRIALS = 3
# NSGA-II's first trials are sampled at random: seed 12 gives lr 0.03, 0.01
# and 0.05 (checked in this process with the same sampler): a front of two,
# and one infeasible trial.
SEED = 12


@pytest.fixture(scope="module")
def objectives_tune(new_project) -> tuple[Project, subprocess.CompletedProcess]:
    project = new_project()
    write_project(project, CONFIG)
    result = project.tune("search=nsga2", f"max-trials={TRIALS}", f"seed={SEED}")
    return project, result


def _rows(project: Project) -> list[dict[str, str]]:
    with open(os.path.join(project.tune_run().dir, "trials.csv")) as f:
        return list(csv.DictReader(f))


def test_every_objective_is_scored_from_scalars_files_and_times(objectives_tune):
    project, result = objectives_tune

    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(project)
    assert len(rows) == TRIALS and {r["status"] for r in rows} == {"completed"}
    assert f"Search: nsga2, seed {SEED}" in result.stdout
    assert sorted(float(r["lr"]) for r in rows) == [0.01, 0.03, 0.05]
    for row in rows:
        lr = float(row["lr"])
        assert float(row["acc_val"]) == pytest.approx(1 - lr)
        # Less at most 0.001 per hour: train takes seconds.
        assert lr - 1e-5 < float(row["rate"]) < lr


def test_infeasible_trials_are_kept_shown_and_never_best(objectives_tune):
    project, result = objectives_tune

    rows = _rows(project)
    for row in rows:
        assert row["feasible"] == ("1" if float(row["lr"]) < 0.04 else "0"), row
        if row["feasible"] == "0":
            assert row["pareto"] == "0"
    assert (
        "1 infeasible (breaking train#model.json:lr <= 0.04): never the best"
        in result.stdout
    )
    assert "(infeasible: breaks a constraint)" in result.stdout
    (best,) = [r for r in project.runs_of("trial") if "best" in r.get("tags")]
    # 0.05 would be best in `rate`, and is infeasible; 0.01 is best in acc_val.
    assert best.get("flags")["lr"] == 0.01


def test_the_front_is_in_the_summary_the_records_and_trials_json(objectives_tune):
    project, result = objectives_tune

    rows = _rows(project)
    front = {int(r["trial"]) for r in rows if r["pareto"] == "1"}
    assert {float(r["lr"]) for r in rows if r["pareto"] == "1"} == {0.01, 0.03}
    assert "Pareto front (2 trials, tagged pareto; max acc_val, max rate):" in (
        result.stdout
    )
    with open(os.path.join(project.tune_run().dir, "trials.json")) as f:
        data = json.load(f)
    assert data["pareto_front"] == sorted(front)
    assert [o["name"] for o in data["objectives"]] == ["acc_val", "rate"]
    tagged = {
        r.get("flags")["lr"]
        for r in project.runs_of("trial")
        if "pareto" in r.get("tags")
    }
    assert tagged == {0.01, 0.03}


def test_guild_compare_shows_every_objective(objectives_tune):
    project, _ = objectives_tune

    compared = project.compare("-Fo", "trial")

    assert len(compared) == TRIALS
    for row in compared:
        assert float(row["acc_val"]) == pytest.approx(1 - float(row["lr"]))
        assert float(row["rate"]) == pytest.approx(float(row["lr"]), abs=1e-5)
        assert row["feasible"] in ("0.0", "1.0", "0", "1")


def test_the_report_plots_the_front(objectives_tune):
    project, _ = objectives_tune

    report = os.path.join(project.tune_run().dir, "report")
    with open(os.path.join(report, "index.html")) as f:
        page = f.read()
    assert '<img src="pareto.png"' in page
    with open(os.path.join(report, "pareto.png"), "rb") as f:
        png = f.read()
    assert png[:8] == PNG_SIGNATURE and len(png) > 5000
    assert "<th>acc_val</th><th>rate</th>" in page
