"""Processes gpkg.ray started, found again only while their pids are still
theirs: a local cluster's state file after its processes died, a step whose
launcher is gone, a killed tune's forked steps; the step's stderr kept small;
a tune stopped while its Ray starts cleans up.

A pid is made to name another process for real: the kernel gives a new process
the pid after /proc/sys/kernel/ns_last_pid (root only; those tests skip
otherwise). The tests marked e2e run `guild` (through the step launchers) or
import Ray.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import still_running, wait_for
from projects import write_project

from gpkg_ray.processes import process_tree
from gpkg_ray.remote import local_cluster
from gpkg_ray.resume.leftovers import settle_runs
from gpkg_ray.trial.launcher import LOST_EXIT_STATUS, ForkLauncher, SubprocessLauncher
from gpkg_ray.trial.step_run import StepRun, new_run_id
from gpkg_ray.trial.workspace import Workspace

e2e = pytest.mark.e2e

# Named like Ray's processes: what the old check of a recorded pid let through.
RAY_NAMED_SLEEP = ["bash", "-c", "exec -a raylet-impostor sleep 60"]

# A stand-in for local_cluster_main once its cluster is up: a child named like
# a raylet, the state file written by the real writer, then it waits for its
# stdin to close (it then ends its child and exits) or for SIGKILL.
SUPERVISOR = """
import subprocess, sys
from gpkg_ray.remote.local_cluster_main import _write_state

child = subprocess.Popen(["bash", "-c", "exec -a raylet-stand-in sleep 60"])
_write_state(sys.argv[1], "127.0.0.1:1", sys.argv[2])
print(child.pid, flush=True)
sys.stdin.read()
child.kill()
child.wait()
"""


def _start_with_pid(pid: int, argv: list[str]) -> subprocess.Popen:
    """Starts `argv` as process `pid`, a pid that is free now."""
    for _ in range(50):  # other processes on the machine may take it first
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError:
            pytest.skip("reusing a pid needs root (/proc/sys/kernel/ns_last_pid)")
        proc = subprocess.Popen(argv)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    pytest.fail(f"pid {pid} never came back")


@pytest.fixture
def cluster_home(tmp_path, monkeypatch) -> Path:
    """HOME for local_cluster's state dir; yields that dir."""
    monkeypatch.setenv("HOME", str(tmp_path))
    state_dir = Path(local_cluster.state_dir())
    state_dir.mkdir(parents=True)
    return state_dir


@pytest.fixture
def ended():
    """Processes a test started: ended (and reaped where they are ours) after it."""
    procs: list[subprocess.Popen | psutil.Process] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            proc.kill()
        with contextlib.suppress(psutil.NoSuchProcess, ChildProcessError):
            proc.wait()


def _supervisor(state_dir: Path, temp_dir: Path) -> tuple[subprocess.Popen, int]:
    """The stand-in supervisor of cluster 'lab' and its child's pid, once the
    state file is written."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(state_dir / "lab.json"), str(temp_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=temp_dir,  # gpkg_ray as installed, not the source tree's
    )
    child = int(proc.stdout.readline())
    return proc, child


def test_stop_leaves_alone_programs_that_took_the_pids_of_a_cluster_since(
    cluster_home, tmp_path, ended
):
    """A cluster killed (or a machine restarted) leaves its state file; its
    pids go to other programs. Stop ended every one named like Ray, with its
    process tree; now only a process with the recorded start time counts."""
    supervisor, child = _supervisor(cluster_home, tmp_path)
    ended.append(supervisor)
    supervisor.stdin.close()  # the cluster ends (its child first) ...
    supervisor.wait()
    # ... and its pids go to other programs, named like Ray's.
    impostors = [
        _start_with_pid(pid, RAY_NAMED_SLEEP) for pid in (supervisor.pid, child)
    ]
    ended.extend(impostors)

    assert local_cluster.stop("lab")

    assert [p.poll() for p in impostors] == [None, None]
    assert list(cluster_home.iterdir()) == []


def test_stop_of_a_state_file_without_start_times_leaves_later_programs_alone(
    cluster_home, tmp_path, ended
):
    """A state file written before start times were recorded (a bare pid per
    process) names only processes that started before it was written."""
    impostor = subprocess.Popen(RAY_NAMED_SLEEP)
    ended.append(impostor)
    state_file = cluster_home / "lab.json"
    state = {"pid": impostor.pid, "processes": [impostor.pid],
             "address": "127.0.0.1:1", "temp_dir": str(tmp_path / "gone")}  # fmt: skip
    state_file.write_text(json.dumps(state))
    written = psutil.Process(impostor.pid).create_time() - 3600  # before a restart
    os.utime(state_file, (written, written))

    assert local_cluster.stop("lab")

    assert impostor.poll() is None
    assert not state_file.exists()


@e2e  # the new cluster's process imports Ray before it fails
def test_start_after_a_killed_cluster_ends_what_is_left_and_reports_its_own_start(
    cluster_home, tmp_path, ended
):
    """Start took the state file a killed cluster left for its own, at once,
    and reported success; the killed cluster's processes went on holding its
    port. Now it ends what is left of the old cluster, removes its files, and
    reports how its own cluster's start went: here, it fails."""
    old_temp = tmp_path / f"{local_cluster.TEMP_PREFIX}old"
    old_temp.mkdir()
    supervisor, child = _supervisor(cluster_home, old_temp)
    ended.append(supervisor)
    left = psutil.Process(child)
    ended.append(left)
    supervisor.kill()  # its raylet stand-in goes on
    supervisor.wait()
    # A spec Ray refuses before it starts any process of its own.
    bad = local_cluster.LocalSpec(workers=1, cpus=1, head_cpus=-1)

    with pytest.raises(local_cluster.ClusterError, match="did not start"):
        local_cluster.start("lab", 6399, bad)

    assert still_running([left]) == []
    assert not old_temp.exists()
    assert sorted(p.name for p in cluster_home.iterdir()) == ["lab.log"]


def _set_child_subreaper(on: bool) -> None:
    """Orphans of our descendants become our children (Linux), so that this
    test can reap one and free its pid (this machine's init may not)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, int(on), 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) failed")


@e2e  # real `guild run`s
def test_a_step_whose_launcher_is_gone_is_not_taken_for_a_process_with_its_pid(
    project, tmp_path, ended
):
    """With its launcher killed, a forked step was followed by its bare pid:
    once the step ended and its pid went to another process, the step seemed
    to run on, and closing it ended that other process (with its tree)."""
    write_project(project)
    workspace = Workspace(str(project.path), str(project.guild_home))
    hold = tmp_path / "release"
    _set_child_subreaper(True)
    try:
        launcher = ForkLauncher(str(project.path), project.env)
        step = StepRun(
            workspace, launcher, "train", {"epochs": 2, "hold": str(hold)}, new_run_id()
        ).start()
        wait_for(lambda: step.op_process() is not None)
        launcher._proc.kill()  # the launcher goes; the step goes on, ours now
        launcher._proc.wait()
        hold.touch()
        os.waitpid(step._proc.pid, 0)  # the step ended: its pid is free
    finally:
        _set_child_subreaper(False)
    impostor = _start_with_pid(step._proc.pid, ["sleep", "60"])
    ended.append(impostor)

    assert step.wait(1) == LOST_EXIT_STATUS
    step.close()
    launcher.close()

    assert impostor.poll() is None


@e2e  # real `guild run`s
def test_a_restart_ends_a_step_a_killed_launcher_forked(project, tmp_path, ended):
    """The steps a launcher forks show the launcher's command line, not their
    `--run-id`: a `guild run` still starting its op when the tune and its
    launcher were killed was not found, and went on."""
    write_project(project)
    tune_run_id, tag = "1" * 32, "tune-test"
    workspace = Workspace(
        str(project.path), str(project.guild_home), tune_run_id=tune_run_id
    )
    launcher = ForkLauncher(str(project.path), workspace.step_env())
    step = StepRun(
        workspace,
        launcher,
        "train",
        {"epochs": 100, "sleep": 0.2},
        new_run_id(),
        (tag,),
    ).start()
    guild_run = step._proc.process
    guild_run.suspend()  # a `guild run` that has not got further
    tree = process_tree(guild_run)
    ended.extend(tree)
    launcher._proc.kill()  # killed with the tune: it stops none of its steps
    launcher._proc.wait()

    settle_runs(str(project.guild_home), tag, tune_run_id, {step.run_id})

    assert still_running(tree) == []


CHATTY_GUILD_YML = """
chatty:
  main: chatty
"""

CHATTY = """
import sys, time

for _ in range(30):
    sys.stderr.write(("x" * 999 + "\\n") * 100)  # 3 MB in all
    sys.stderr.flush()
    time.sleep(0.05)
raise SystemExit("chatty failed on purpose")
"""


@e2e  # real `guild run`s
@pytest.mark.parametrize("launcher_class", [ForkLauncher, SubprocessLauncher])
def test_the_stderr_of_a_chatty_step_is_kept_small(project, launcher_class):
    """The step's stderr file (the op's stderr comes through `guild run`) grew
    without limit and was read whole for its last line."""
    from gpkg_ray.trial.step_run import STDERR_MAX_BYTES

    project.write("guild.yml", CHATTY_GUILD_YML)
    project.write("chatty.py", CHATTY)
    workspace = Workspace(str(project.path), str(project.guild_home))
    launcher = launcher_class(str(project.path), workspace.step_env())
    try:
        step = StepRun(workspace, launcher, "chatty", {}, new_run_id()).start()
        assert step.wait(120) == 1
        size = os.fstat(step._stderr.fileno()).st_size
        line = step.error_line()
        step.close()
    finally:
        launcher.close()

    assert size <= STDERR_MAX_BYTES
    assert line == "chatty failed on purpose"


@e2e  # a tune with its embedded Ray
def test_a_tune_stopped_while_its_ray_starts_leaves_nothing(project):
    """A SIGTERM before the tune's stop handlers were in place (while Ray
    started) killed it outright: Ray's temp dir was left behind."""
    write_project(project)
    # The tune's own temp dir, to see what it leaves there; short, since Ray
    # puts sockets in it.
    temp = Path(tempfile.mkdtemp(prefix="gr-", dir="/tmp"))
    project.env["TMPDIR"] = str(temp)
    signalled = []

    def stop_once_ray_starts(_proc) -> None:
        ray_dirs = [p for p in temp.glob("gpkg-ray-*") if "-step-" not in p.name]
        tune_pid = project.tune_run().pid if project.runs_of("tune") else None
        if not signalled and ray_dirs and tune_pid:
            signalled.append(ray_dirs)
            os.kill(tune_pid, signal.SIGTERM)

    try:
        watched = project.watch_tune("max-trials=1", during=stop_once_ray_starts)
        left = sorted(p.name for p in temp.iterdir())
    finally:
        for path in temp.iterdir():
            subprocess.run(["rm", "-rf", str(path)], check=False)
        temp.rmdir()

    assert signalled, watched.output
    assert left == [], watched.output
    assert still_running(watched.processes) == []
    assert project.tune_run().status == "terminated", watched.output
    assert "Traceback" not in watched.output


def test_step_env_names_the_tune_run_for_its_steps_only():
    """The tune run's id goes to the steps' environment; a tune that is itself
    a step of another's passes on its own, not the outer one's."""
    from gpkg_ray.environ import STEP_TUNE_VAR

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STEP_TUNE_VAR, "outer")
        assert Workspace("p", "h", tune_run_id="inner").step_env()[STEP_TUNE_VAR] == (
            "inner"
        )
        assert STEP_TUNE_VAR not in Workspace("p", "h").step_env()
