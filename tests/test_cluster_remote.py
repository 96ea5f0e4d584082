"""`ray-cluster` Guild remotes: `guild remote status` and `cluster=NAME`
against a real multi-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import error_lines, still_running, write_guild_config
from projects import write_project

from gpkg_ray.processes import process_tree

HERE = Path(__file__).parent


class RunningCluster:
    def __init__(self, tmp_path: Path, token: str | None = None):
        worker_dir = tmp_path / "worker"
        worker_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        if token:
            env["GPKG_RAY_TEST_TOKEN"] = token
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "ray_cluster.py"), str(worker_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            pytest.fail("the test cluster did not start")
        self.address = json.loads(line)["address"]
        self.processes = process_tree(self.proc.pid)

    def shutdown(self) -> None:
        """Closes the helper's stdin (it shuts the cluster down), then stops
        by pid whatever of its tree is left."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.processes += [
            p for p in process_tree(self.proc.pid) if p not in self.processes
        ]
        for p in self.processes:
            if still_running([p]):
                p.kill()


@pytest.fixture
def cluster(tmp_path):
    running = RunningCluster(tmp_path)
    try:
        yield running
    finally:
        running.shutdown()
        assert still_running(running.processes) == []


def test_status_of_a_cluster_with_token_auth_needs_its_token(
    project, tmp_path, guild_env
):
    token = secrets.token_hex(16)
    cluster = RunningCluster(tmp_path, token=token)
    try:
        token_file = tmp_path / "geronimo.token"
        token_file.write_text(token + "\n")
        write_guild_config(
            project,
            {
                "geronimo": {
                    "address": cluster.address,
                    "auth-token-file": str(token_file),
                },
                "nokey": {"address": cluster.address},
                "wrongkey": {"address": cluster.address, "auth-token-env": "TOKEN"},
            },
        )
        project.env["TOKEN"] = secrets.token_hex(16)

        with_token = project.guild("remote", "status", "geronimo")
        without = project.guild("remote", "status", "nokey")
        wrong = project.guild("remote", "status", "wrongkey")
    finally:
        cluster.shutdown()
    assert still_running(cluster.processes) == []

    assert with_token.returncode == 0, with_token.stdout + with_token.stderr
    assert "2 nodes up, 2/2 CPUs free" in with_token.stdout
    assert without.returncode != 0
    assert error_lines(without) == [
        f"guild: remote 'nokey': {cluster.address} needs a token (Ray token auth): "
        "set auth-token-file or auth-token-env to the cluster's token"
    ]
    assert error_lines(wrong) == [
        f"guild: remote 'wrongkey': {cluster.address} refused the token given (Ray "
        "token auth): set auth-token-file or auth-token-env to the cluster's token"
    ]
    assert not (project.home / ".ray").exists(), "the token is written nowhere"


def _closed_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_status_lists_the_nodes_then_says_when_the_cluster_is_down(project, cluster):
    write_guild_config(project, {"geronimo": {"address": cluster.address}})

    up = project.guild("remote", "status", "geronimo")

    assert up.returncode == 0, up.stdout + up.stderr
    lines = up.stdout.splitlines()
    assert lines[0] == (
        f"geronimo: Ray cluster at {cluster.address}, 2 nodes up, 2/2 CPUs free"
    )
    assert lines[1].split() == [
        "node",
        "address",
        "status",
        "CPUs",
        "free",
        "GPUs",
        "free",
        "role",
    ]
    head, worker = (line.split() for line in lines[2:])
    assert head[2] in ("idle", "running") and worker[2] in ("idle", "running")
    assert head[1:2] + head[3:] == ["127.0.0.1", "0", "0", "0", "0", "head"]
    assert worker[1:2] + worker[3:] == ["127.0.0.1", "2", "2", "0", "0", "worker"]

    cluster.shutdown()
    down = project.guild("remote", "status", "geronimo")

    assert down.returncode == 2
    assert error_lines(down) == [
        f"guild: remote geronimo is not available (cannot reach {cluster.address} "
        "(Connection refused): is the cluster's head node running there?)"
    ]


def test_a_tune_on_a_cluster_that_is_down_stops_before_any_run(project):
    write_project(project)
    address = _closed_address()
    write_guild_config(project, {"geronimo": {"address": address}})

    result = project.tune("cluster=geronimo")

    assert result.returncode != 0
    assert error_lines(result) == [
        f"guild: cluster 'geronimo' is down: cannot reach {address} (Connection "
        "refused): is the cluster's head node running there?"
    ]
    assert project.run_ids() == []


def test_a_tune_on_a_cluster_that_is_up_says_trials_run_locally_for_now(
    project, cluster
):
    write_project(project)
    write_guild_config(project, {"geronimo": {"address": cluster.address}})

    result = project.tune("cluster=geronimo")

    assert result.returncode != 0
    assert error_lines(result) == [
        "guild: cluster 'geronimo' is up (2 nodes), but this version of gpkg.ray "
        "runs trials on cluster=local only: running them on a ray-cluster remote "
        "comes next"
    ]
    assert project.run_ids() == []


@pytest.mark.parametrize(
    ("remote", "message"),
    [
        ({}, "remote 'geronimo' has no address: give the head node's GCS address"),
        (
            {"address": "ray://10.0.0.5:10001"},
            "remote 'geronimo': address ray://10.0.0.5:10001 is a URL (Ray Client "
            "is not supported)",
        ),
        (
            {"address": "10.0.0.5"},
            "remote 'geronimo': address '10.0.0.5' is not HOST:PORT",
        ),
        (
            {"address": "127.0.0.1:1", "adress": "x"},
            "remote 'geronimo': unknown key 'adress' (a ray-cluster remote takes type, "
            "description, address, auth-token-file, auth-token-env)",
        ),
        (
            {"address": "127.0.0.1:1", "auth-token-env": "NO_SUCH_TOKEN_VAR"},
            "remote 'geronimo': auth-token-env names NO_SUCH_TOKEN_VAR, which is not "
            "set: export the cluster's token in it",
        ),
    ],
    ids=["no address", "ray client url", "no port", "unknown key", "token env unset"],
)
def test_bad_remote_config_is_one_line(project, remote, message):
    write_guild_config(project, {"geronimo": remote})

    result = project.guild("remote", "status", "geronimo")

    assert result.returncode != 0
    (line,) = error_lines(result)
    assert line.startswith(f"guild: {message}"), line


def test_start_and_stop_say_where_a_cluster_started_outside_guild_is_managed(project):
    write_guild_config(project, {"geronimo": {"address": "127.0.0.1:6379"}})

    result = project.guild("remote", "start", "-y", "geronimo")

    assert result.returncode != 0
    assert "geronimo is a cluster started outside Guild: start it with `ray start " in (
        result.stderr
    )
