"""gpkg.ray as Guild's optimizer, through the real `guild` CLI: `guild run
train lr=loguniform[..] -o gpkg.ray/tpe`, its batch run and trial runs as
Guild makes them, Guild's batch options, the optimizer's flags (-Fo), an op's
default optimizer, a pipeline as the trial, stop and restart. The mapping of
a batch to a TuneSpec and its errors are checked in process
(test_optimizer_spec.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import GUILD, Project, error_lines, still_running, wait_for
from projects import EVALUATE, TRAIN

from gpkg_ray.processes import process_tree

pytestmark = pytest.mark.e2e

GUILD_YML = """
- model: ''
  operations:
    train:
      main: train
      flags:
        lr: 0.01
        batch-size:
          default: 32
          choices: [16, 32, 64]
        epochs: 2
        sleep: 0.0
        hold: ''
        mode: ok
    evaluate:
      main: evaluate
      requires:
        - operation: train
    train-opt:
      main: train
      flags:
        lr: 0.01
        epochs: 2
      optimizers:
        grid:
          algorithm: gpkg.ray/grid
          default: yes
          max-concurrent: 1
    score:
      main: evaluate
      flags:
        x: 1
      requires:
        - operation: train
    pipeline:
      flags:
        lr: 0.01
      steps:
        - run: train
          flags:
            lr: ${lr}
        - evaluate
"""


def write_project(project: Project) -> None:
    project.write("guild.yml", GUILD_YML)
    project.write("train.py", TRAIN)
    project.write("evaluate.py", EVALUATE)


def run_ok(project: Project, *args: str) -> subprocess.CompletedProcess:
    result = project.guild("run", "-y", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def guild_run_asked(project: Project, *args: str) -> subprocess.CompletedProcess:
    """`guild run ARGS` without -y, answering Guild's `Continue?` with yes."""
    return subprocess.run(
        [GUILD, "run", *args],
        cwd=project.path,
        env=project.env,
        input="y\n",
        capture_output=True,
        text=True,
    )


def batch_run(project: Project, op: str):
    (run,) = project.runs_of(op)
    assert run.batch_proto is not None
    return run


def trial_runs(project: Project, batch) -> list:
    """The runs the batch links to, as Guild links its batches' trials."""
    linked = [
        name
        for name in os.listdir(batch.dir)
        if os.path.islink(os.path.join(batch.dir, name))
    ]
    return [project.run(run_id) for run_id in sorted(linked)]


def trials_json(batch) -> dict:
    with open(os.path.join(batch.dir, "trials.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tpe_batch(new_project):
    """One TPE batch that the tests below read: Guild's default objective
    (`loss`, minimized), a seed, two trials at once."""
    project = new_project()
    write_project(project)
    result = run_ok(
        project,
        "train",
        "lr=loguniform[1e-3:1e-1]",
        "batch-size=[16,64]",
        "-o",
        "gpkg.ray/tpe",
        "--max-trials",
        "3",
        "--random-seed",
        "7",
        "-Fo",
        "max-concurrent=2",
    )
    return project, batch_run(project, "tpe"), result


def test_batch_and_trials_are_guilds(tpe_batch) -> None:
    """`guild runs` shows the batch (`train+...tpe`) and its trials, which
    are `train` runs linked from it with the proto's flags, one value each
    from the space, and Guild's trial label."""
    project, batch, _ = tpe_batch
    trials = trial_runs(project, batch)
    assert len(trials) == 3
    assert {r.id for r in trials} == {r.id for r in project.runs_of("train")}
    assert all(r.status == "completed" for r in trials)
    assert batch.status == "completed"
    listing = project.guild("runs").stdout
    assert "train+gpkg-ray/tpe" in listing or "train+gpkg.ray/tpe" in listing
    only_trials = project.guild("runs", "-Fo", "train").stdout.splitlines()
    assert len(only_trials) == 3
    for run in trials:
        flags = run.get("flags")
        assert 1e-3 <= flags["lr"] <= 1e-1
        assert flags["batch-size"] in (16, 64)
        assert (flags["epochs"], flags["mode"]) == (2, "ok")
        assert run.get("label") == guild_label(flags)
        assert f"tune-{batch.id[:8]}" in run.get("tags")


def guild_label(flags: dict) -> str:
    """The label Guild gives a trial of its own batches (its flags)."""
    from guild import op_util

    return op_util.run_label(None, flags)


def test_compare_rows_are_the_trials(tpe_batch) -> None:
    """`guild compare` shows one row per trial, with its flags and its
    objective (`loss`); the best (lowest loss) trial run is tagged best."""
    project, batch, _ = tpe_batch
    rows = {row["run"]: row for row in project.compare("-Fo", "train")}
    assert len(rows) == 3
    data = trials_json(batch)
    objectives = {t["runs"]["train"][:8]: t["objective"] for t in data["trials"]}
    for short_id, row in rows.items():
        assert float(row["loss"]) == pytest.approx(objectives[short_id], rel=1e-5)
        assert row["batch-size"] in ("16", "64")
    best = min(objectives, key=objectives.get)
    best_rows = project.compare("-Fo", "train", "-Ft", "best")
    assert [row["run"] for row in best_rows] == [best]


def test_seed_and_max_concurrent(tpe_batch) -> None:
    """--random-seed is the search's seed; -Fo max-concurrent=2 ran at most
    two trials at once (their runs' start and stop times)."""
    project, batch, result = tpe_batch
    assert batch.get("random_seed") == 7
    assert trials_json(batch)["seed"] == 7
    assert "Search: tpe, seed 7, 3 trials" in result.stdout
    spans = [(r.get("started"), r.get("stopped")) for r in trial_runs(project, batch)]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 1 <= most <= 2


def test_default_grid_optimizer_and_maximize(project: Project) -> None:
    """An op whose `optimizers:` name gpkg.ray/grid as its default: a flag
    function alone makes it the batch op (not Guild's `random`: one line, no
    runs, for a range); `--print-trials` shows the grid; the batch runs each
    listed value once, with the optimizer's flags from guild.yml, and
    `--maximize` picks the best by the largest value."""
    write_project(project)
    result = project.guild("run", "-y", "train-opt", "lr=loguniform[1e-4:1e-1]")
    assert result.returncode != 0
    assert error_lines(result) == [
        "guild: gpkg.ray/grid: flag lr=loguniform[0.0001:0.1] is a range: list "
        "values (e.g. logspace[-4:-1:4]), or use gpkg.ray/random or gpkg.ray/tpe"
    ]
    staged = project.guild(
        "run", "-y", "train", "lr=[0.1,0.2]", "-o", "gpkg.ray/tpe", "--stage-trials"
    )
    assert error_lines(staged) == [
        "guild: operation 'tpe' does not support --stage-trials"
    ]
    assert project.run_ids() == []
    # Without -y: a bad -Fo value or space stops before Guild's prompt.
    for args, line in [
        (
            ["-Fo", "cluster=nosuch"],
            "guild: unknown cluster 'nosuch': use cluster=local, or define a "
            "remote 'nosuch' of type ray-cluster in your Guild config "
            "(ray-cluster remotes defined: none)",
        ),
        (
            ["--maximize", "evaluate#acc_val"],
            "guild: gpkg.ray/grid: --maximize evaluate#acc_val names step "
            "evaluate, but train is not a pipeline (a `steps` op): name its "
            "scalar alone, e.g. --maximize acc_val",
        ),
    ]:
        asked = guild_run_asked(
            project, "train", "lr=[0.1,0.2]", "-o", "gpkg.ray/grid", *args
        )
        assert asked.returncode != 0
        assert "Continue?" not in asked.stdout + asked.stderr
        assert error_lines(asked) == [line]
    assert project.run_ids() == []
    lrs = "lr=[0.05,0.02]"
    printed = run_ok(project, "train-opt", lrs, "--optimize", "--print-trials")
    rows = [line.split() for line in printed.stdout.splitlines()]
    assert rows == [
        ["#", "epochs", "lr"],
        ["1", "2", "0.05"],
        ["2", "2", "0.02"],
    ]
    assert project.run_ids() == []
    run_ok(project, "train-opt", lrs, "--optimize", "--maximize", "loss")
    batch = batch_run(project, "grid")
    assert batch.get("objective") == "-loss"
    assert batch.get("flags")["max-concurrent"] == 1
    trials = trial_runs(project, batch)
    assert sorted(r.get("flags")["lr"] for r in trials) == [0.02, 0.05]
    (best,) = project.compare("-Fo", "train-opt", "-Ft", "best")
    assert best["lr"] == "0.05"


def test_stop_kill_and_restarts_resume(project: Project, tmp_path: Path) -> None:
    """`guild stop` of a random batch (-Fo: ASHA, two trials at once) stops
    its trials and leaves no process; `guild run --restart` of the batch
    resumes it, as does a restart after the batch was killed (SIGKILL to its
    op, its trials' runs left running): the interrupted trials run again, to
    --max-trials in all, and nothing of any attempt is left running."""
    write_project(project)
    hold = tmp_path / "release"  # the trials wait after their first epoch
    first = start_guild(
        project,
        "train",
        "lr=loguniform[1e-3:1e-1]",
        f"hold={hold}",
        "-o",
        "gpkg.ray/random",
        "--max-trials",
        "2",
        "-Fo",
        "max-concurrent=2",
        "-Fo",
        "scheduler=asha",
        # ASHA, with no rung in train's two epochs: no trial stopped early,
        # whatever the values drawn.
        "-Fo",
        "grace-period=5",
    )
    with ended(first):
        wait_for(lambda: running_trials(project) == 2, timeout=120)
        procs = process_tree(first.pid)
        batch = batch_run(project, "random")
        stopped = project.guild("stop", "-y", batch.id)
        assert stopped.returncode == 0, stopped.stderr
        assert first.wait(timeout=60) != 0
    assert batch.status == "terminated"
    assert {r.status for r in project.runs_of("train")} == {"terminated"}
    wait_for(lambda: not still_running(procs), timeout=30)

    second = start_guild(project, "--restart", batch.id)
    with ended(second):
        wait_for(lambda: running_trials(project) == 2, timeout=120)
        procs += process_tree(second.pid)
        os.kill(batch.pid, signal.SIGKILL)  # the batch's op: its tuner
        second.wait(timeout=60)

    # The killed attempt's trials still run (held): the restart ends them
    # before it says it resumes, and only then may trials go on.
    output = tmp_path / "third-output.txt"
    third = start_guild(project, "--restart", batch.id, output=output)
    with ended(third):
        wait_for(lambda: "Resuming (attempt 3)" in output.read_text(), timeout=120)
        hold.touch()
        assert third.wait(timeout=120) == 0, output.read_text()
    assert batch.status == "completed"
    data = trials_json(batch)
    assert [t["status"] for t in data["trials"]] == ["completed"] * 2
    assert data["attempts"] == 3
    # Runs of interrupted attempts stay, linked, as Guild keeps a batch's trials.
    statuses = sorted(r.status for r in trial_runs(project, batch))
    assert statuses == ["completed"] * 2 + ["terminated"] * 4
    assert still_running(procs) == []


def start_guild(
    project: Project, *args: str, output: Path | None = None
) -> subprocess.Popen:
    """`guild run -y ARGS` in the background, in a session of its own; its
    output to `output`, if given."""
    out = open(output, "w") if output else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [GUILD, "run", "-y", *args],
            cwd=project.path,
            env=project.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if output:
            out.close()


@contextlib.contextmanager
def ended(proc: subprocess.Popen):
    """Kills `proc`'s whole session if the block leaves it running (a test
    that failed)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def running_trials(project: Project) -> int:
    return sum(r.status == "running" for r in project.runs_of("train"))


def test_pipeline_as_the_trial(project: Project) -> None:
    """A Guild `steps` op as the trial: each trial is a pipeline run (its
    steps Guild's runs), scored by a step's scalar (`--maximize
    evaluate#acc_val`). Two at once: Guild isolates a pipeline's steps
    (`isolate-runs`, on by default), so each trial's `evaluate` takes its own
    pipeline's `train`, not the latest one: its accuracy is 1 - its lr."""
    write_project(project)
    run_ok(
        project,
        "pipeline",
        "lr=[0.1,0.01]",
        "-o",
        "gpkg.ray/grid",
        "--maximize",
        "evaluate#acc_val",
        "-Fo",
        "max-concurrent=2",
    )
    batch = batch_run(project, "grid")
    trials = trial_runs(project, batch)
    assert sorted(r.get("flags")["lr"] for r in trials) == [0.01, 0.1]
    assert all(r.opref.op_name == "pipeline" for r in trials)
    (_, first_stop), (second_start, _) = sorted(
        (r.get("started"), r.get("stopped")) for r in trials
    )
    assert second_start < first_stop, "the two pipelines ran one after the other"
    data = trials_json(batch)
    lrs = {r.id[:8]: r.get("flags")["lr"] for r in trials}
    scores = {t["runs"]["pipeline"][:8]: t["objective"] for t in data["trials"]}
    assert scores == pytest.approx({run: 1 - lr for run, lr in lrs.items()})
    assert len(project.runs_of("train")) == 2 and len(project.runs_of("evaluate")) == 2
