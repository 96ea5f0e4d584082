"""Understanding a tune's results, end to end: the report written while the
tune runs, its plots of importance, parallel coordinates and the two most
important values, and the summary's `guild run` lines of the best trial, run
again. One tune for the module (the real guild CLI, a real embedded Ray)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import GUILD, PNG_SIGNATURE, Project, Watched, check_report
from PIL import Image
from projects import tune_config, write_project

pytestmark = pytest.mark.e2e  # real `guild` runs and Ray

TRIALS = 5


@dataclass
class ReportedTune:
    """A tune whose trials hold in train until the test has seen the live
    page, and what the test saw of the page while the tune ran."""

    project: Project
    watched: Watched
    live_pages: list[str] = field(default_factory=list)
    """Each new content of report/index.html seen while the tune ran."""

    @property
    def run(self):
        return self.project.tune_run()

    @property
    def page(self) -> str:
        return (Path(self.run.dir) / "report" / "index.html").read_text()


@pytest.fixture(scope="module")
def reported_tune(new_project) -> ReportedTune:
    project = new_project()
    gate = project.path / "gate"
    write_project(
        project,
        tune_config(
            f"""
            lr: loguniform[1e-3:1e-1]
            batch-size: [16, 32, 64]
            train:hold: {gate}
            """
        ),
    )
    pages: list[str] = []

    def during(proc: subprocess.Popen) -> None:
        """Releases the trials (held after their first epoch) once the page
        shows two of them running: an event, not a time."""
        found = list((project.guild_home / "runs").glob("*/report/index.html"))
        if not found or proc.poll() is not None:
            return
        text = found[0].read_text()  # put in place whole: never half a page
        if not pages or pages[-1] != text:
            pages.append(text)
        if "2 running" in text:
            gate.touch()

    watched = project.watch_tune(
        f"max-trials={TRIALS}",
        "max-concurrent=2",
        "seed=3",
        "report-every=1",
        during=during,
    )
    return ReportedTune(project, watched, pages)


def test_the_report_is_written_and_reloads_itself_while_the_tune_runs(reported_tune):
    assert reported_tune.watched.returncode == 0, reported_tune.watched.output
    # The trials waited for the page: it was there, live, before they ended.
    running = [p for p in reported_tune.live_pages if "2 running" in p]
    assert running, reported_tune.live_pages
    assert '<meta http-equiv="refresh" content="1">' in running[0]
    assert "The tune is running: this page is written again" in running[0]
    assert f"{TRIALS} completed" not in running[0]


def test_the_report_at_the_end_shows_importance_and_the_new_plots(reported_tune):
    run_dir = Path(reported_tune.run.dir)
    page = reported_tune.page

    # acc_val is one value per trial: no learning curves.
    check_report(
        run_dir,
        expect_curves=False,
        more={"importance.png", "parallel.png", "contour.png"},
    )
    for name in ("importance.png", "parallel.png", "contour.png"):
        path = run_dir / "report" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            assert min(image.size) >= 300, (name, image.size)
    assert f"{TRIALS} trials: {TRIALS} completed, 0 stopped, 0 failed" in page
    section = page[page.index("<h2>Importance</h2>") : page.index("<figure>")]
    assert f"PED-ANOVA on {TRIALS} completed trials" in section
    assert sorted(re.findall(r"<tr><th>([^<]+)</th>", section)) == [
        "batch-size",
        "lr",
    ]
    assert "The objective over " in page and "the two most important" in page


def test_the_summary_ends_with_importance_and_commands_that_rerun_the_best(
    reported_tune,
):
    project = reported_tune.project
    output = reported_tune.watched.output.splitlines()
    (importance,) = [line for line in output if line.startswith("Importance")]
    assert importance.startswith(f"Importance (PED-ANOVA, {TRIALS} trials): ")
    start = next(i for i, line in enumerate(output) if line.startswith("Best trial"))
    best_number = int(output[start].split()[2])
    end = next(i for i in range(start, len(output)) if output[i].startswith("Report"))
    lines = output[start + 1 : end]
    assert all(len(line) <= 80 for line in lines)
    # A command longer than the summary's width goes on after a backslash.
    commands, command = [], []
    for line in lines:
        command.append(line)
        if not line.endswith("\\"):
            commands.append("\n".join(command))
            command = []
    train_command, evaluate_command = commands
    assert train_command.startswith("  guild run train lr=")
    assert evaluate_command == (
        "  guild run evaluate operation:train=$(guild select -o train)"
    )
    best = next(t for t in project.trials() if t["trial"] == best_number)
    best_train = project.run(best["runs"]["train"])

    # The lines as a user pastes them in a shell (with -y: no prompt).
    env = {**project.env, "PATH": f"{os.path.dirname(GUILD)}:{os.environ['PATH']}"}
    for pasted in commands:
        done = subprocess.run(
            ["bash", "-c", pasted.replace("guild run ", "guild run -y ", 1)],
            cwd=project.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

    (train,) = [
        r for r in project.runs_of("train") if "tune-" not in str(r.get("tags"))
    ]
    (evaluate,) = [
        r for r in project.runs_of("evaluate") if "tune-" not in str(r.get("tags"))
    ]
    assert train.get("flags") == best_train.get("flags")
    assert evaluate.get("flags")["operation:train"] == train.id
