"""gpkg_ray.guild_api: run state in a Guild home, as Guild itself then reads it.

In-process and cheap: a temp Guild home, runs written by hand, and Guild's own
`guild.run.Run` to read them back; `sleep` processes stand in for a run's op.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import psutil
import pytest
from guild import run as guild_run

from gpkg_ray import guild_api


def _guild_status(guild_home, run_id: str) -> str:
    """The status Guild shows, from a Run of Guild's own (nothing cached)."""
    run_dir = os.path.join(guild_home, "runs", run_id)
    return guild_run.Run(run_id, run_dir).status


def _new_run(guild_home, run_id: str = "a" * 32):
    run = guild_api.open_run(str(guild_home), run_id)
    opref = guild_api.package_opref("gpkg.ray", "0", "trial")
    guild_api.init_run(run, opref, {"flags": {"x": 1}, "tags": ["t"]})
    return run


def _touch(path: str, text: str = "") -> None:
    with open(path, "w") as f:
        f.write(text)


def _sleep(run_id: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("RUN_ID", None)
    if run_id is not None:
        env["RUN_ID"] = run_id
    proc = subprocess.Popen(["sleep", "60"], env=env)
    # Until it has exec'd, /proc shows the environment of this process (a
    # loaded machine's window, seen in CI): wait for `sleep` itself.
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).cmdline() != ["sleep", "60"]:
        assert time.monotonic() < deadline, "sleep did not start"
        time.sleep(0.01)
    return proc


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_run_dir_is_guilds_layout(tmp_path):
    assert guild_api.run_dir("/h", "abc") == os.path.join("/h", "runs", "abc")
    assert guild_api.runs_dir("/h") == os.path.join("/h", "runs")
    run = guild_api.open_run(str(tmp_path), "abc")
    assert (run.id, run.dir) == ("abc", os.path.join(str(tmp_path), "runs", "abc"))
    assert not guild_api.run_exists(str(tmp_path), "abc")


def test_an_initialized_run_reads_back_in_guild(tmp_path):
    run = _new_run(tmp_path)
    read = guild_run.Run(run.id, run.dir)
    assert read.opref.pkg_name == "gpkg.ray"
    assert read.opref.op_name == "trial"
    assert read.get("id") == run.id
    assert read.get("flags") == {"x": 1}
    assert read.get("started") == read.get("initialized")
    assert guild_api.run_exists(str(tmp_path), run.id)


def test_home_runs_lists_runs_with_an_opref_in_id_order(tmp_path):
    assert list(guild_api.home_runs(str(tmp_path / "nowhere"))) == []
    _new_run(tmp_path, "b" * 32)
    _new_run(tmp_path, "a" * 32)
    os.makedirs(guild_api.run_dir(str(tmp_path), "c" * 32))  # not a run yet
    assert [r.id for r in guild_api.home_runs(str(tmp_path))] == ["a" * 32, "b" * 32]


def test_close_run_ends_it_and_removes_its_markers(tmp_path):
    run = _new_run(tmp_path)
    guild_api.mark_running(run, os.getpid())
    assert _guild_status(tmp_path, run.id) == "running"
    for marker in ("LOCK.remote", "PENDING", "STAGED"):
        _touch(run.guild_path(marker))

    assert guild_api.close_run(run, guild_api.TERMINATED) is True

    assert _guild_status(tmp_path, run.id) == "terminated"
    assert not any(os.path.exists(run.guild_path(m)) for m in guild_api.MARKERS)
    assert guild_api.exit_status(run) == guild_api.TERMINATED
    assert guild_api.has_exit_status(run)
    assert run.get("stopped") >= run.get("started")


def test_close_run_keep_ended_keeps_a_recorded_status(tmp_path):
    run = _new_run(tmp_path)
    guild_api.close_run(run, 0)
    stopped = run.get("stopped")
    _touch(run.guild_path("LOCK.remote"), "cluster")
    assert _guild_status(tmp_path, run.id) == "running"  # the marker wins

    assert guild_api.close_run(run, 1, keep_ended=True, attrs={"why": "x"}) is False

    assert _guild_status(tmp_path, run.id) == "completed"
    assert run.get("stopped") == stopped
    assert run.get("why") is None


def test_close_run_keep_ended_closes_an_open_run_with_attrs(tmp_path):
    run = _new_run(tmp_path)
    assert guild_api.close_run(run, 1, keep_ended=True, attrs={"why": "lost"})
    assert _guild_status(tmp_path, run.id) == "error"
    assert run.get("why") == "lost"


def test_mark_running_reopens_an_ended_run(tmp_path):
    run = _new_run(tmp_path)
    guild_api.close_run(run, guild_api.TERMINATED)
    guild_api.mark_running(run, os.getpid())
    assert _guild_status(tmp_path, run.id) == "running"
    assert not guild_api.has_exit_status(run)
    assert run.get("stopped") is None


def test_live_op_is_the_lock_pid_of_this_runs_op_only(tmp_path):
    run = _new_run(tmp_path)
    assert guild_api.live_op(run) is None  # no LOCK: not started
    own, other = _sleep(run.id), _sleep("f" * 32)
    try:
        guild_api.mark_running(run, own.pid)
        op = guild_api.live_op(run)
        assert op is not None and op.pid == own.pid
        # A pid reused by another process (another run's op, say) is not ours.
        guild_api.mark_running(run, other.pid)
        assert guild_api.live_op(run) is None
    finally:
        for proc in (own, other):
            proc.kill()
            proc.wait()
    guild_api.mark_running(run, own.pid)  # a LOCK left by a dead op
    assert guild_api.live_op(run) is None


def test_stop_op_ends_the_op_then_its_children():
    # The op (a shell) and its children, as `guild stop` finds them.
    op = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 10
    while len(psutil.Process(op.pid).children()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    children = [p.pid for p in psutil.Process(op.pid).children()]

    handle = psutil.Process(op.pid)
    started = time.monotonic()
    guild_api.stop_op(handle)
    took = time.monotonic() - started

    # psutil reaps the op (our child here): Popen cannot see its status.
    op.wait(timeout=1)
    assert not any(_alive(pid) for pid in [op.pid, *children])
    # SIGTERM to the op first; its children only CHILD_TERM_SECONDS later.
    assert took >= guild_api.CHILD_TERM_SECONDS - 0.1
    guild_api.stop_op(handle)  # gone already: nothing to do


def test_stop_op_ends_a_paused_op_before_it_goes_on(tmp_path):
    """A step paused while a scheduler decides (StepRun.pause) is stopped
    without running on: past its sleep, it would write the file at once."""
    went_on = tmp_path / "went-on"
    op = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; time.sleep(0.5); open({str(went_on)!r}, 'w').close()",
        ]
    )
    time.sleep(0.2)
    handle = psutil.Process(op.pid)
    handle.suspend()
    time.sleep(0.5)

    guild_api.stop_op(handle)

    op.wait(timeout=5)
    assert not went_on.exists()


def test_wait_for_exit_status(tmp_path):
    run = _new_run(tmp_path)
    started = time.monotonic()
    assert guild_api.wait_for_exit_status(run, timeout=0.3) is False
    assert time.monotonic() - started >= 0.3
    guild_api.close_run(run, 0)
    assert guild_api.wait_for_exit_status(run, timeout=0) is True


def test_flags_as_guild_writes_them():
    assert guild_api.encode_flag_val(0.5) == "0.5"
    assert guild_api.decode_flag_val("[1, 2]") == [1, 2]
    assert guild_api.decode_flag_function("loguniform[1e-5:1e-1]") == (
        "loguniform",
        (1e-05, 0.1),
    )
    with pytest.raises(ValueError):
        guild_api.decode_flag_function("3")
    assert guild_api.flag_assigns({"lr": 0.1, "n": 2}) == ["lr=0.1", "n=2"]


def test_written_scalars_are_read_back_exactly_by_guild(tmp_path):
    from guild.tfevent import ScalarReader

    from gpkg_ray.trial.scalars import Scalar, ScalarWatcher

    run = _new_run(tmp_path)
    # 0.963889 in 32 bits is 0.9638890027999878: these are stored in 64.
    guild_api.write_scalars(run.guild_path(), {"acc": 0.963889, "loss": 0.1}, 3)
    assert sorted(ScalarReader(run.guild_path())) == [
        ("acc", 0.963889, 3),
        ("loss", 0.1, 3),
    ]
    assert ScalarWatcher(run.dir).latest_final() == {
        "acc": Scalar(0.963889, 3),
        "loss": Scalar(0.1, 3),
    }


def test_write_scalars_writes_no_sys_scalars_of_guilds_summary_plugins(tmp_path):
    """In an op's process, Guild's summary plugins add `sys/*` values to the
    scalars Guild's SummaryWriter writes: not to a tune's results."""
    from guild import plugin, python_util
    from guild.summary import SummaryWriter

    from gpkg_ray.trial.scalars import ScalarWatcher

    memory = plugin.for_name("memory")
    memory.patch_env()  # as Guild's op_main does for each plugin of the op
    try:
        with SummaryWriter(str(tmp_path / "guild")) as writer:
            writer.add_scalar("acc", 0.5, 0)
        guild_api.write_scalars(str(tmp_path / "ours" / ".guild"), {"acc": 0.5})
    finally:
        python_util.remove_method_listeners(SummaryWriter.add_scalar)
        with contextlib.suppress(ImportError):
            from tensorboardX import SummaryWriter as TBXWriter

            python_util.remove_method_listeners(TBXWriter.add_scalar)
    # Guild's own writer got them: the plugin was in effect.
    assert "sys/mem_used" in _tags(tmp_path / "guild")
    _touch(str(tmp_path / "ours" / ".guild" / "opref"))  # a run, as Guild's are
    assert set(ScalarWatcher(str(tmp_path / "ours")).latest_final()) == {"acc"}


def _tags(logdir) -> set[str]:
    from guild.tfevent import ScalarReader

    return {tag for tag, _value, _step in ScalarReader(str(logdir))}


def test_importing_it_imports_no_guild_module():
    # Guild imports the plugin in every `guild` command: the door must be cheap.
    code = (
        "import sys, gpkg_ray.guild_api; "
        "print([m for m in sys.modules if m.split('.')[0] == 'guild'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
