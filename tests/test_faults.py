"""The fault hook (gpkg_ray.faults) that benchmarks/fault_injection.py arms:
it kills only when armed, at the named point and occurrence, and takes the
whole process group of the session with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from gpkg_ray.faults import FAULT_VAR
from gpkg_ray.files import remove_written_aside
from gpkg_ray.processes import wait_ended

KILLED_WITHIN_SECONDS = 2.0

# A session leader (as `guild run` in the script) with a child in its group,
# reaching point `a` twice and `b` once.
SCRIPT = """
import subprocess, sys
from gpkg_ray import faults
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(60)"],
    stdout=subprocess.DEVNULL,  # the test reads the output to its end
    stderr=subprocess.DEVNULL,
)
print(child.pid, flush=True)
for name in ("a", "b", "a"):
    faults.point(name)
    print("passed", name, flush=True)
"""


def _run(fault: str | None) -> tuple[int, list[str], psutil.Process | None]:
    """The script's exit status, the lines after the child's pid, and the
    child (None once it has ended)."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_VAR}
    if fault is not None:
        env[FAULT_VAR] = fault
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    child, *lines = done.stdout.splitlines()
    try:
        return done.returncode, lines, psutil.Process(int(child))
    except psutil.NoSuchProcess:
        return done.returncode, lines, None


def test_unarmed_every_point_passes():
    status, lines, child = _run(None)
    assert (status, lines) == (0, ["passed a", "passed b", "passed a"])
    assert child is not None and child.status() != psutil.STATUS_ZOMBIE
    child.kill()


def test_armed_the_named_occurrence_kills_the_process_group():
    status, lines, child = _run("a:2")
    assert status == -signal.SIGKILL
    assert lines == ["passed a", "passed b"]
    if child is not None:
        # A SIGKILL is delivered, not waited for: the child may be dying
        # still (unarmed, it sleeps for a minute).
        ended = wait_ended(child, KILLED_WITHIN_SECONDS)  # a zombie has
        if not ended:  # the kill did not take it: ours to end
            child.kill()
        assert ended


def test_a_file_a_kill_left_written_aside_is_removed_by_a_restart(tmp_path):
    # A tune killed while it wrote trials.csv aside left `.trials.csv.*.tmp`
    # in its run for good: the restart wrote trials.csv anew beside it.
    code = (
        "from gpkg_ray.files import replaced\n"
        f"with replaced({str(tmp_path / 'trials.csv')!r}) as f:\n"
        "    f.write('trial,status\\n')\n"
    )
    env = {**os.environ, FAULT_VAR: "results-write"}
    killed = subprocess.run(
        [sys.executable, "-c", code], env=env, timeout=60, start_new_session=True
    )
    (tmp_path / "trials.json").write_text("{}")
    (tmp_path / ".notes.tmp").write_text("not ours")
    (aside,) = [p.name for p in tmp_path.iterdir() if p.name.startswith(".trials")]

    assert killed.returncode == -signal.SIGKILL
    assert remove_written_aside(str(tmp_path)) == [aside]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp", "trials.json"]


def test_steps_do_not_inherit_the_hook(monkeypatch):
    from gpkg_ray.trial.workspace import Workspace

    monkeypatch.setenv(FAULT_VAR, "steps-running")
    assert FAULT_VAR not in Workspace("p", "h", tune_run_id="t").step_env()
