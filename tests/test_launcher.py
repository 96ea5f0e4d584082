"""Step launchers: a step forked from the warm launcher is the same Guild run
as a fresh `guild run`, fails, stops and ends the same way, and leaves nothing
running. Real `guild run`s, no Ray."""

from __future__ import annotations

import os
import tempfile

import psutil
import pytest
from conftest import still_running, wait_for
from projects import daemon_pids, daemons_running, kill_daemons, write_project

from gpkg_ray.processes import process_tree
from gpkg_ray.trial.launcher import (
    ForkLauncher,
    LauncherGone,
    SubprocessLauncher,
    step_launcher,
)
from gpkg_ray.trial.step_run import StepRun, new_run_id
from gpkg_ray.trial.workspace import Workspace

pytestmark = pytest.mark.e2e  # real `guild` runs

LAUNCHERS = {"fork": ForkLauncher, "fresh": SubprocessLauncher}


@pytest.fixture
def workspace(project) -> Workspace:
    write_project(project)
    return Workspace(str(project.path), str(project.guild_home))


@pytest.fixture(params=sorted(LAUNCHERS))
def launcher(request, project, workspace):
    launcher = LAUNCHERS[request.param](str(project.path), project.env)
    yield launcher
    launcher.close()


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """This process's temp dir, empty at the start."""
    path = tmp_path / "temp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _step(workspace, launcher, **flags) -> StepRun:
    return StepRun(workspace, launcher, "train", flags, new_run_id()).start()


def _files(run_dir: str) -> set[str]:
    names = set(os.listdir(os.path.join(run_dir, ".guild", "attrs")))
    return names | set(os.listdir(run_dir))


def test_fork_launcher_where_pidfd_works(project):
    launcher = step_launcher(str(project.path), project.env)
    try:
        assert isinstance(launcher, ForkLauncher)
    finally:
        launcher.close()


def test_a_forked_step_is_the_same_guild_run(project, workspace):
    runs = {}
    for name, launcher_class in LAUNCHERS.items():
        launcher = launcher_class(str(project.path), project.env)
        try:
            step = _step(workspace, launcher, lr=0.02, epochs=2)
            assert step.wait(60) == 0, step.error_line()
            runs[name] = step
        finally:
            launcher.close()
    fork, fresh = runs["fork"], runs["fresh"]
    assert _files(fork.run_dir) == _files(fresh.run_dir)
    for step in (fork, fresh):
        run = project.run(step.run_id)
        assert run.status == "completed"
        assert run.get("flags")["lr"] == 0.02
        assert run.get("exit_status") == 0
        with open(os.path.join(step.run_dir, ".guild", "output")) as f:
            assert "loss: 0.040000" in f.read()
        step.close()


def test_a_failed_step_gives_its_exit_status_and_error(
    project, workspace, launcher, temp_dir
):
    seen = []

    class Watched:  # what is in the temp dir when the launcher gets the file
        def __getattr__(self, name):
            return getattr(launcher, name)

        def start(self, args, stderr):
            seen.append(sorted(os.listdir(temp_dir)))
            return launcher.start(args, stderr)

    step = _step(workspace, Watched(), mode="crash")
    # The step's stderr file never has a name: a tune killed at any moment
    # leaves nothing in the temp dir.
    assert seen == [[]]
    assert os.listdir(temp_dir) == []
    assert step.wait(60) == 1
    assert step.error_line() == "train crashed on purpose"
    assert project.run(step.run_id).status == "error"
    step.close()


def test_a_guild_error_reaches_the_step(workspace, launcher):
    step = _step(workspace, launcher, epochs="many")
    assert step.wait(60) not in (0, None)
    assert "epochs" in step.error_line()
    step.close()


def test_a_stopped_step_ends_terminated_with_nothing_left(project, workspace, launcher):
    step = _step(workspace, launcher, epochs=100, sleep=0.2)
    wait_for(lambda: step.op_process() is not None)
    tree = process_tree(step._proc.pid)
    step.close()
    assert project.run(step.run_id).status == "terminated"
    assert still_running(tree) == []


def test_closing_the_fork_launcher_stops_a_running_step(project, workspace):
    launcher = ForkLauncher(str(project.path), project.env)
    step = _step(workspace, launcher, epochs=100, sleep=0.2)
    wait_for(lambda: step.op_process() is not None)
    tree = process_tree(launcher._proc.pid)
    assert len(tree) >= 3  # the launcher, `guild run`, the op
    # It forks from one thread only (its preloads start no thread that a fork
    # would copy stuck, as NumPy's BLAS pool was).
    assert len(os.listdir(f"/proc/{launcher._proc.pid}/task")) == 1
    launcher.close()
    psutil.wait_procs(tree, timeout=10)
    assert still_running(tree) == []
    assert step.wait(10) != 0


def test_a_killed_fork_launcher_is_gone(project, workspace):
    launcher = ForkLauncher(str(project.path), project.env)
    launcher._proc.kill()
    wait_for(lambda: launcher.gone)
    with pytest.raises(LauncherGone):
        _step(workspace, launcher)
    launcher.close()


def test_what_a_forked_step_daemonizes_is_counted_and_stopped(
    project, workspace, request
):
    request.addfinalizer(lambda: kill_daemons(project))
    launcher = ForkLauncher(str(project.path), project.env)
    try:
        step = _step(workspace, launcher, mode="daemon", epochs=100, sleep=0.2)
        # Until the daemon has exec'd daemon.py (its pid is recorded before:
        # on a loaded machine /proc showed the forked parent's command line).
        wait_for(lambda: step.op_process() is not None and daemons_running(project))
        (daemon,) = daemons_running(project)
        # Below the launcher (a subreaper), not init: counted with the op.
        assert daemon.ppid() == launcher._proc.pid
        assert daemon.pid in [p.pid for p in step.op_processes()]
        step.close()
        assert project.run(step.run_id).status == "terminated"
        assert daemons_running(project) == []

        # A step that completes: what it left goes with it.
        step = _step(workspace, launcher, mode="daemon", epochs=1)
        assert step.wait(60) == 0, step.error_line()
        assert len(daemon_pids(project)) == 2
        assert daemons_running(project) == []
        step.close()
    finally:
        launcher.close()
