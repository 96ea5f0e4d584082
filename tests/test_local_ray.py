"""The embedded Ray's setup choices (its full life is tested in test_tune.py)."""

from __future__ import annotations

import glob
import inspect
import mmap
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from gpkg_ray.cluster import check_cluster
from gpkg_ray.engine.local_ray import embedded_ray, ray_env
from gpkg_ray.errors import ClusterError

LOCAL_AUTH_VAR = "GPKG_RAY_LOCAL_AUTH"
"""The documented setting that turns the embedded Ray's token auth off."""


@pytest.fixture(autouse=True)
def no_auth_settings(monkeypatch):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", LOCAL_AUTH_VAR):
        monkeypatch.delenv(name, raising=False)


def test_loopback_only_and_token_auth_with_the_given_token():
    env = ray_env("s3cret")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"] == "s3cret"


def test_a_users_token_mode_gets_this_rays_own_token(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the users cluster token")
    env = ray_env("s3cret")
    assert (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]) == ("token", "s3cret")


@pytest.mark.parametrize("mode", ["disabled", "k8s", ""])
def test_a_users_auth_mode_other_than_token_is_refused(monkeypatch, mode):
    """`RAY_AUTH_MODE=disabled` in the user's environment turned the embedded
    Ray's token off: any user of the machine could run code as this one
    through its loopback ports (issue 18)."""
    monkeypatch.setenv("RAY_AUTH_MODE", mode)

    for check in (lambda: ray_env("s3cret"), lambda: check_cluster(None, 1, 0)):
        with pytest.raises(ClusterError) as e:
            check()
        assert str(e.value) == (
            f"RAY_AUTH_MODE={mode} would turn off the embedded Ray's token auth "
            "(any user of this machine could then run code as you through its "
            "ports): unset RAY_AUTH_MODE, or set GPKG_RAY_LOCAL_AUTH=disabled to "
            "run it without a token"
        )


def test_the_documented_setting_turns_token_auth_off(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv(LOCAL_AUTH_VAR, "disabled")
    env = ray_env("s3cret")
    assert env["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN" not in env
    check_cluster(None, 1, 0)

    monkeypatch.setenv(LOCAL_AUTH_VAR, "off")
    with pytest.raises(ClusterError, match="GPKG_RAY_LOCAL_AUTH=off is not a setting"):
        ray_env("s3cret")


def test_refuses_to_start_if_ray_was_imported_to_listen_everywhere(
    monkeypatch, tmp_path
):
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    # A temp dir of the test's own: other processes' gpkg-ray-* dirs come and
    # go in /tmp meanwhile.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    environ_before = dict(os.environ)
    temp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "gpkg-ray-*")))

    with (
        pytest.raises(ClusterError, match="would listen on every interface"),
        embedded_ray(),
    ):
        pass

    assert dict(os.environ) == environ_before
    assert (
        set(glob.glob(os.path.join(tempfile.gettempdir(), "gpkg-ray-*"))) == temp_before
    )


def test_the_private_ray_names_lean_start_uses():
    """The embedded Ray's lean start (local_ray.lean_node, LEAN_SYSTEM_CONFIG)
    stands on Ray's private API: this fails as soon as an upgrade of Ray moves
    any of it (issue 22). Then see what ray.init starts, and adapt them."""
    from ray._private import node, parameter, services, utils, worker

    from gpkg_ray.engine.local_ray import LEAN_SYSTEM_CONFIG

    # ray.init builds its head through the module's name, which lean_node swaps.
    assert "ray._private.node.Node(" in inspect.getsource(worker.init)
    head = inspect.getsource(node.Node.start_head_processes)
    assert "self._ray_params.no_monitor" in head
    assert "self.start_api_server(" in head
    assert "self._ray_params.include_log_monitor" in inspect.getsource(
        node.Node.start_ray_processes
    )
    assert list(inspect.signature(node.Node.start_api_server).parameters) == [
        "self",
        "include_dashboard",
        "raise_on_failure",
    ]
    assert list(inspect.signature(node.Node.__init__).parameters)[:2] == [
        "self",
        "ray_params",
    ]
    raylet = inspect.getsource(services.start_raylet)
    assert "ray._private.utils.get_dashboard_dependency_error() is not None" in raylet
    assert 'dashboard_agent_command.append("--minimal")' in raylet
    assert (
        list(inspect.signature(utils.get_dashboard_dependency_error).parameters) == []
    )
    params = parameter.RayParams()
    assert params.no_monitor is False and params.include_log_monitor is None
    # An unknown RayConfig key makes the GCS exit, and ray.init time out 30 s
    # later: each key is one the raylet knows.
    with open(services.RAYLET_EXECUTABLE, "rb") as f:
        binary = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for key in LEAN_SYSTEM_CONFIG:
            assert binary.find(key.encode() + b"\0") >= 0, key


def test_the_private_ray_names_the_test_clusters_use():
    """tests/ray_cluster.py starts its nodes through local_ray.lean_node (the
    test above checks its names) and sets the head's node health checks:
    this fails as soon as Ray builds a Cluster's nodes another way or drops
    a health check key (the GCS would refuse it and the cluster not start)."""
    import ast

    from ray import cluster_utils
    from ray._private import services

    # Cluster.add_node builds the head and each worker through the name
    # lean_node swaps.
    add_node = inspect.getsource(cluster_utils.Cluster.add_node)
    assert add_node.count("ray._private.node.Node(") == 2
    # Read, not imported: importing ray_cluster sets Ray's variables here.
    with open(os.path.join(os.path.dirname(__file__), "ray_cluster.py")) as f:
        source = f.read()
    (health_checks,) = [
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and ast.unparse(node.targets[0]) == "HEALTH_CHECKS"
    ]
    with open(services.GCS_SERVER_EXECUTABLE, "rb") as f:
        binary = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for key in health_checks:
            assert binary.find(key.encode() + b"\0") >= 0, key


LIST_RAYS_PROCESSES = """
from gpkg_ray.engine.local_ray import embedded_ray
with embedded_ray() as ray:
    import ray._private.node
    assert ray._private.node.Node.__name__ == "Node"  # lean_node restored it
    import psutil
    for p in psutil.Process().children(recursive=True):
        print(p.name(), *p.cmdline()[1:])
"""


@pytest.mark.e2e
def test_the_embedded_ray_starts_only_what_a_tune_uses(tmp_path):
    """No dashboard API server, autoscaler monitor, log monitor or idle workers
    (each a Python process of a CPU-second or more per tune): Ray's GCS and
    raylet, and the two agents the raylet cannot run without."""
    # A short temp dir: Ray's socket paths in it must fit 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="gt-")
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": temp_dir}
    try:
        result = subprocess.run(
            [sys.executable, "-c", LIST_RAYS_PROCESSES],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = sorted(line.split()[0] for line in lines)
    assert names == [
        "gcs_server",
        "ray::DashboardAgent",
        "ray::RuntimeEnvAgent",
        "raylet",
    ], result.stdout
    # The raylet's command line holds the agent's (the agent's own is renamed).
    (raylet,) = [line for line in lines if line.startswith("raylet ")]
    agent = raylet.split("--dashboard_agent_command=")[1]
    assert "--minimal" in agent.split("--runtime_env_agent_command=")[0], raylet
    assert not (tmp_path / ".ray").exists()
