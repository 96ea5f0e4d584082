"""`ray-cluster` Guild remotes: `guild remote status` and `cluster=NAME`
against a real multi-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import (
    closed_address,
    error_lines,
    remote_status_error,
    still_running,
    write_guild_config,
)
from projects import tune_config, write_project
from test_optimizer import batch_run as optimizer_batch_run
from test_optimizer import guild_label as optimizer_guild_label
from test_optimizer import guild_run_asked
from test_optimizer import trial_runs as optimizer_trial_runs
from test_optimizer import write_project as write_optimizer_project

from gpkg_ray.processes import process_tree

e2e = pytest.mark.e2e  # real `guild` runs and Ray clusters

HERE = Path(__file__).parent
SPACE = "lr: loguniform[1e-3:1e-1]\n"


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
        started = json.loads(line)
        self.address = started["address"]
        self.worker_node_id = started["worker"]
        self.worker_dir = worker_dir
        self.processes = process_tree(self.proc.pid)

    def command(self, line: str) -> dict:
        """Sends a command to the helper (see tests/ray_cluster.py); its answer."""
        self.processes += [
            p for p in process_tree(self.proc.pid) if p not in self.processes
        ]
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

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
    """A cluster of the test's own: for a test that kills or adds nodes."""
    running = RunningCluster(tmp_path)
    try:
        yield running
    finally:
        running.shutdown()
        assert still_running(running.processes) == []


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """One cluster with token auth for the tests that only use it: a head and a
    worker with 2 CPUs; its token is in `token_file`. A test that runs trials
    on it leaves nothing on it."""
    base = tmp_path_factory.mktemp("shared-cluster")
    token = secrets.token_hex(16)
    running = RunningCluster(base, token=token)
    running.token_file = base / "cluster.token"
    running.token_file.write_text(token + "\n")
    try:
        yield running
    finally:
        running.shutdown()
        assert still_running(running.processes) == []


@e2e
def test_status_of_a_cluster_with_token_auth_needs_its_token(project, shared_cluster):
    cluster = shared_cluster
    write_guild_config(
        project,
        {
            "geronimo": {
                "address": cluster.address,
                "auth-token-file": str(cluster.token_file),
            },
            "nokey": {"address": cluster.address},
            "wrongkey": {"address": cluster.address, "auth-token-env": "TOKEN"},
        },
    )
    project.env["TOKEN"] = secrets.token_hex(16)

    with_token = project.guild("remote", "status", "geronimo")
    without = project.guild("remote", "status", "nokey")
    wrong = project.guild("remote", "status", "wrongkey")

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


def _remote(cluster, **keys) -> dict:
    """A ray-cluster remote for the shared cluster, with its token."""
    return {
        "address": cluster.address,
        "auth-token-file": str(cluster.token_file),
        **keys,
    }


@e2e
def test_status_lists_the_nodes(project, shared_cluster):
    cluster = shared_cluster
    write_guild_config(project, {"geronimo": _remote(cluster)})

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


@e2e
def test_a_tune_on_a_cluster_that_is_down_stops_before_any_run(project):
    write_project(project)
    address = closed_address()
    write_guild_config(project, {"geronimo": {"address": address}})

    result = project.tune("cluster=geronimo")

    assert result.returncode != 0
    assert error_lines(result) == [
        f"guild: cluster 'geronimo' is down: cannot reach {address} (Connection "
        "refused): is the cluster's head node running there?"
    ]
    assert project.run_ids() == []


@e2e
def test_a_tune_on_a_cluster_runs_its_steps_on_the_worker_and_brings_runs_home(
    project, shared_cluster
):
    cluster = shared_cluster
    # The first train run holds after its first epoch until it came home in
    # part, as it does every sync period while it runs.
    release = project.path.parent / "release"
    write_project(project, tune_config(SPACE + f"train:hold: {release}\n"))
    geronimo = _remote(
        cluster,
        env={"GPKG_RAY_TEST_VAR": "from the remote"},
        **{"trial-cpus": 2},  # the worker's 2 CPUs: one trial at a time
    )
    write_guild_config(project, {"geronimo": geronimo})

    came_home_in_part = []

    def release_once_a_step_came_home_in_part(proc):
        for run in [] if came_home_in_part else project.runs_of("train"):
            if run.status == "running" and "step: 0" in project.output(run):
                came_home_in_part.append(run.id)
                release.touch()

    watched = project.watch_tune(
        "cluster=geronimo",
        "max-trials=2",
        during=release_once_a_step_came_home_in_part,
    )

    assert watched.returncode == 0, watched.output
    assert came_home_in_part, "no step run was seen at home while it ran"
    assert "2 trials on cluster=geronimo" in watched.output
    steps = project.runs_of("train") + project.runs_of("evaluate")
    assert len(steps) == 4
    first, second = sorted(project.runs_of("train"), key=lambda r: r.get("started"))
    assert first.get("stopped") < second.get("started"), "trials overlapped"
    for run in steps:
        assert run.status == "completed", (run.id, run.status)
        node = run.get("ray_node")
        # The worker's own TMPDIR: the run was made there, then came home.
        assert node["run_dir"] == str(
            cluster.worker_dir / f"gpkg-ray-runs-"
            f"{project.tune_run().id}" / "runs" / run.id
        )
        assert node["node_id"] == cluster.worker_node_id
        assert not os.path.exists(run.guild_path("LOCK.remote"))
        assert os.path.exists(run.guild_path("output"))
        assert os.path.exists(os.path.join(run.dir, "train.py")), "source code"
        assert run.get("env")["GPKG_RAY_TEST_VAR"] == "from the remote"
    for run in project.runs_of("train"):
        assert (
            json.loads(Path(run.dir, "model.json").read_text())["lr"]
            == (run.get("flags")["lr"])
        )
    # Scalars came home: each trial's accuracy is 1 - its lr.
    accs = [float(row["acc_val"]) for row in project.compare("-Fo", "evaluate")]
    lrs = [run.get("flags")["lr"] for run in project.runs_of("train")]
    assert sorted(accs) == pytest.approx(sorted(1 - lr for lr in lrs), abs=1e-5)
    cat = project.guild("cat", "-p", "model.json", project.runs_of("train")[0].id)
    assert cat.returncode == 0 and '"lr"' in cat.stdout
    # Nothing of the tune is left on the worker.
    assert list(cluster.worker_dir.glob("gpkg-ray-runs-*")) == []


@e2e
def test_a_guild_batch_on_a_cluster_runs_its_trials_on_the_worker(
    project, shared_cluster
):
    """`-o gpkg.ray/grid -Fo cluster=NAME`: the trials run on the worker,
    made there from the batch's proto, and come home as the batch's trials:
    linked from the batch run, completed, with their flags, label, scalars
    and source; two at once (the remote's trial-cpus=1 on a 2-CPU worker).
    The trial op, `score`, requires a `train` run made here: it goes to the
    worker as a tune's upstream runs do (its accuracy is 1 - that run's lr).
    A pipeline as the trial is refused before Guild's prompt: its step runs
    would not come home."""
    cluster = shared_cluster
    write_optimizer_project(project)
    write_guild_config(project, {"geronimo": _remote(cluster, **{"trial-cpus": 1})})
    upstream = project.guild("run", "-y", "train", "lr=0.25")
    assert upstream.returncode == 0, upstream.stderr
    pipeline = guild_run_asked(
        project,
        "pipeline",
        "lr=[0.1,0.2]",
        "-o",
        "gpkg.ray/grid",
        "-Fo",
        "cluster=geronimo",
    )

    result = project.guild(
        "run",
        "-y",
        "score",
        "x=[1,2]",
        "-o",
        "gpkg.ray/grid",
        "--maximize",
        "acc_val",
        "-Fo",
        "cluster=geronimo",
        "-Fo",
        "max-concurrent=2",
    )

    assert "Continue?" not in pipeline.stdout + pipeline.stderr
    assert error_lines(pipeline) == [
        "guild: gpkg.ray/grid: cluster=geronimo: a pipeline (a `steps` op) as "
        "the trial runs on the embedded Ray only: use cluster=local, or a tune "
        "op whose steps are the pipeline's"
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    batch = optimizer_batch_run(project, "grid")
    trials = optimizer_trial_runs(project, batch)
    assert sorted(r.get("flags")["x"] for r in trials) == [1, 2]
    assert {r.id for r in trials} == {r.id for r in project.runs_of("score")}
    for run in trials:
        assert run.status == "completed", (run.id, run.status)
        node = run.get("ray_node")
        assert node["node_id"] == cluster.worker_node_id
        assert node["run_dir"].startswith(str(cluster.worker_dir))
        assert run.get("label") == optimizer_guild_label(run.get("flags"))
        assert os.path.exists(os.path.join(run.dir, "evaluate.py")), "source code"
        assert not os.path.exists(run.guild_path("LOCK.remote"))
    rows = project.compare("-Fo", "score")
    assert sorted(row["run"] for row in rows) == sorted(r.short_id for r in trials)
    assert [float(row["acc_val"]) for row in rows] == [0.75, 0.75]
    assert len(project.runs_of("train")) == 1, "the upstream run only"
    assert list(cluster.worker_dir.glob("gpkg-ray-runs-*")) == []


@e2e
def test_a_trial_whose_node_dies_runs_again_on_another_node(project, cluster, tmp_path):
    second_dir = tmp_path / "worker2"
    second_dir.mkdir()
    workers = {cluster.worker_node_id, cluster.command(f"add {second_dir}")["worker"]}
    # train holds after its first epoch until the test has caught it on its
    # node; its next attempt runs through.
    release = tmp_path / "release"
    space = SPACE + f"train:epochs: 3\ntrain:hold: {release}\n"
    write_project(project, tune_config(space))
    write_guild_config(project, {"geronimo": {"address": cluster.address}})
    seen: dict = {}

    def kill_its_node_once_the_step_came_home_in_part(proc):
        for run in [] if seen else project.runs_of("train"):
            if run.status == "running" and "step: 0" in project.output(run):
                seen["run"] = run.id
                seen["lock"] = Path(run.guild_path("LOCK.remote")).read_text()
                node = run.get("ray_node")["node_id"]
                seen["killed"] = cluster.command(f"kill {node}")["killed"]
                release.touch()

    watched = project.watch_tune(
        "cluster=geronimo",
        "max-trials=1",
        "max-failures=1",
        during=kill_its_node_once_the_step_came_home_in_part,
    )

    assert watched.returncode == 0, watched.output
    assert seen, "the step was never seen running in GUILD_HOME"
    assert seen["lock"] == "geronimo"  # shown running on the remote meanwhile
    lost = project.run(seen["run"])
    assert lost.status == "error"
    assert lost.get("ray_node")["node_id"] == seen["killed"]
    assert lost.get("ray_node_lost")
    assert "step: 0" in project.output(lost), "what came home before is kept"
    assert not os.path.exists(lost.guild_path("LOCK.remote"))
    again = [r for r in project.runs_of("train") if r.id != lost.id]
    assert len(again) == 1
    (survivor,) = workers - {seen["killed"]}
    for run in again + project.runs_of("evaluate"):
        assert run.status == "completed"
        assert run.get("ray_node")["node_id"] == survivor
    assert "runs again (attempt 2): attempt 1 failed: its Ray worker was lost (" in (
        watched.output
    )
    assert "1 trials: 1 completed" in watched.output
    assert "Raylet" not in watched.output, "Ray's messages go to its log"


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
            "description, address, auth-token-file, auth-token-env, max-copy-mb, "
            "env, pip, trial-cpus, trial-gpus, local, slurm)",
        ),
        (
            {"address": "127.0.0.1:1", "trial-cpus": -1},
            "remote 'geronimo': trial-cpus must be a finite number >= 0, not '-1'",
        ),
        (
            {"address": "127.0.0.1:1", "pip": "numpy"},
            "remote 'geronimo': pip must be a list of requirements",
        ),
        (
            {"address": "127.0.0.1:1", "max-copy-mb": "lots"},
            "remote 'geronimo': max-copy-mb must be a finite number of MB >= 0, "
            "not 'lots'",
        ),
        (
            {"address": "10.0.0.5:6379", "local": {"workers": 2}},
            "remote 'geronimo': a local cluster listens on 127.0.0.1 only: set its "
            "address to 127.0.0.1:PORT, not 10.0.0.5:6379",
        ),
        (
            {"address": "127.0.0.1:6390", "local": {"workers": 0}},
            "remote 'geronimo': local: workers must be a finite number >= 1, not '0'",
        ),
        (
            {"address": "127.0.0.1:6390", "local": {"cpu": 2}},
            "remote 'geronimo': unknown key 'local: cpu' (local takes workers, cpus, "
            "gpus, head-cpus)",
        ),
        (
            {"address": "127.0.0.1:1", "auth-token-env": "NO_SUCH_TOKEN_VAR"},
            "remote 'geronimo': auth-token-env names NO_SUCH_TOKEN_VAR, which is not "
            "set: export the cluster's token in it",
        ),
        # YAML's `.inf` and `.nan` are floats (issue 18).
        (
            {"address": "127.0.0.1:1", "max-copy-mb": float("inf")},
            "remote 'geronimo': max-copy-mb must be a finite number of MB >= 0, not "
            "'inf'",
        ),
        (
            {"address": "127.0.0.1:1", "trial-gpus": float("nan")},
            "remote 'geronimo': trial-gpus must be a finite number >= 0, not 'nan'",
        ),
        (
            {"address": "127.0.0.1:6390", "local": {"cpus": float("nan")}},
            "remote 'geronimo': local: cpus must be a finite number >= 0, not 'nan'",
        ),
    ],
    ids=[
        "no address",
        "ray client url",
        "no port",
        "unknown key",
        "max-copy-mb",
        "trial-cpus",
        "pip",
        "local not loopback",
        "local workers",
        "local unknown key",
        "token env unset",
        "max-copy-mb inf",
        "trial-gpus nan",
        "local cpus nan",
    ],
)
def test_bad_remote_config_is_one_line(project, remote, message):
    write_guild_config(project, {"geronimo": remote})

    line = remote_status_error(project, "geronimo")

    assert line is not None and "\n" not in line
    assert line.startswith(message), line


def test_a_relative_auth_token_file_is_read_from_where_guild_run_ran(
    tmp_path, monkeypatch
):
    """The tuner runs in its run dir: it read a relative auth-token-file there,
    where the plugin had read it in the project (issue 18)."""
    from guild import config

    from gpkg_ray.remote.config import cluster_config

    project = tmp_path / "project"
    (project / "tokens").mkdir(parents=True)
    (project / "tokens" / "geronimo.token").write_text("s3cret\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    raw = {"address": "127.0.0.1:1", "auth-token-file": "tokens/geronimo.token"}

    # The plugin, in the `guild run` typed in the project.
    monkeypatch.chdir(project)
    with config.SetCwd(str(project)):
        plugins = cluster_config("geronimo", raw)
    # The tuner, in its run dir, with Guild's cwd set back to CMD_DIR.
    monkeypatch.chdir(run_dir)
    with config.SetCwd(str(project)):
        tuners = cluster_config("geronimo", raw)

    token_file = str(project / "tokens" / "geronimo.token")
    assert plugins.auth_token_file == tuners.auth_token_file == token_file
    assert plugins.auth_token() == tuners.auth_token() == "s3cret"


@e2e
def test_the_variable_auth_token_env_names_is_stored_nowhere(project, shared_cluster):
    """Guild stores a run's environment in its `env` attr, less only the names
    with token, secret or password in them, and all of it in `.guild/ENV` when
    it stages a run: the token of `auth-token-env: RAY_KEY` was stored in the
    tune run (issue 18)."""
    cluster = shared_cluster
    token = cluster.token_file.read_text().strip()
    write_project(project, tune_config(SPACE))
    remote = {"address": cluster.address, "auth-token-env": "RAY_KEY"}
    write_guild_config(project, {"geronimo": {**remote, "trial-cpus": 2}})
    project.env["RAY_KEY"] = token

    staged = project.guild("run", "-y", "--stage", "tune", "cluster=geronimo")
    tuned = project.tune("cluster=geronimo", "max-trials=1")

    assert staged.returncode == 0, staged.stderr
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    tune_runs = project.runs_of("tune")
    assert sorted(r.status for r in tune_runs) == ["completed", "staged"]
    for run in tune_runs:
        assert "RAY_KEY" not in (run.get("env") or {}), run.status
    # Nowhere in the Guild home: no file of any run holds the token.
    holding = [
        os.path.join(root, name)
        for root, _, names in os.walk(project.guild_home)
        for name in names
        if token.encode() in Path(root, name).read_bytes()
    ]
    assert holding == []


@e2e
def test_guild_remote_status_of_a_bad_remote_config_is_that_one_line(project):
    write_guild_config(project, {"geronimo": {"address": "127.0.0.1:1", "adress": "x"}})
    expected = remote_status_error(project, "geronimo")
    assert expected is not None

    result = project.guild("remote", "status", "geronimo")

    assert result.returncode != 0
    assert error_lines(result) == [f"guild: {expected}"]


@pytest.fixture
def short_tmp():
    """A temp dir of the test's own with a short path (Ray puts sockets in
    its temp dir, whose paths may not exceed 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@e2e
def test_start_and_stop_a_cluster_the_config_describes_as_local(project, short_tmp):
    address = closed_address()
    write_project(project)
    local = {"workers": 1, "cpus": 2}
    # Files of a run over 10 bytes stay on the node: model.json, say.
    lab = {"address": address, "local": local, "max-copy-mb": 0.00001}
    write_guild_config(project, {"lab": lab})
    state_file = project.home / ".guild" / "ray-clusters" / "lab.json"
    token_file = state_file.with_suffix(".token")
    # Ray's files shared by every Ray of the machine, in the temp dir these
    # commands see (/tmp/ray by default): what another cluster left there.
    ray_globals = _plant_ray_globals(project, short_tmp)

    before = project.guild("remote", "status", "lab")
    started = project.guild("remote", "start", "-y", "lab")
    running_globals = _tree_of(ray_globals)
    processes = []
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = json.loads(state_file.read_text())
        processes = process_tree(state["pid"])
        assert started.stdout.splitlines()[-1] == (
            f"lab: Ray cluster started at {address} (a head and 1 worker, token "
            "auth); stop it with `guild remote stop lab`"
        )
        assert token_file.stat().st_mode & 0o777 == 0o600
        again = project.guild("remote", "start", "-y", "lab")
        # The remote uses the cluster's token without a token key.
        status = project.guild("remote", "status", "lab")
        listeners = {
            # IPv4 loopback, also as an IPv6 socket maps it
            conn.laddr.ip.removeprefix("::ffff:")
            for proc in processes
            if still_running([proc])
            for conn in proc.net_connections(kind="inet")
            if conn.status == "LISTEN"
        }
        tuned = project.tune("cluster=lab", "max-trials=2")
    finally:
        stopped = project.guild("remote", "stop", "-y", "lab")
    stopped_again = project.guild("remote", "stop", "-y", "lab")

    assert error_lines(before) == [
        f"guild: remote lab is not available (cannot reach {address} (Connection "
        "refused): start it with `guild remote start lab`)"
    ]
    assert error_lines(again)[0].startswith(
        f"guild: cluster 'lab' is already running (pid {state['pid']}, at {address})"
    )
    assert status.returncode == 0, status.stderr
    assert f"lab: Ray cluster at {address}, 2 nodes up" in status.stdout
    assert listeners == {"127.0.0.1"}
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    node_homes = set()
    for run in project.runs_of("train"):
        assert run.status == "completed"
        # The size policy: the big file is named and kept on the node, with
        # the run's directory there; Guild's own files came home.
        node_run_dir = Path(run.get("ray_node")["run_dir"])
        size = (node_run_dir / "model.json").stat().st_size
        # (every file of the run is over 10 bytes: its source code too)
        assert f"model.json ({size} bytes)" in run.get("ray_files_left_on_node")
        assert not Path(run.dir, "model.json").exists()
        assert Path(run.guild_path("output")).exists()
        node_homes.add(node_run_dir.parent.parent)
    for home in node_homes:  # what the policy kept on the node: ours to remove
        shutil.rmtree(home)
    assert (
        stopped.returncode == 0 and stopped.stdout.strip() == "lab: Ray cluster stopped"
    )
    assert stopped_again.stdout.strip() == "lab: not running"
    assert still_running(processes) == []
    assert not state_file.exists() and not token_file.exists()
    assert not state_file.with_suffix(".log").exists()
    assert not Path(state["temp_dir"]).exists()
    assert not (project.home / ".ray").exists(), "the token is written nowhere else"
    # Ray's shared files neither written nor removed, by start, tune or stop.
    assert running_globals == _tree_of(ray_globals) == _PLANTED


_PLANTED = {
    "ray_current_cluster": "10.9.9.9:6379",
    "session_latest": "-> session_2026-01-01_00-00-00_0_1",
}


def _plant_ray_globals(project, tmp: Path) -> Path:
    """Ray's machine-wide files in a temp dir of the test's own (TMPDIR of
    its commands: Ray's default temp dir is TMPDIR/ray), as another cluster
    on the machine would have left them."""
    ray_dir = tmp / "ray"
    ray_dir.mkdir(parents=True)
    (ray_dir / "ray_current_cluster").write_text(_PLANTED["ray_current_cluster"])
    os.symlink(_PLANTED["session_latest"][3:], ray_dir / "session_latest")
    project.env["TMPDIR"] = str(tmp)
    return ray_dir


def _tree_of(ray_dir: Path) -> dict[str, str]:
    return {
        path.name: f"-> {os.readlink(path)}" if path.is_symlink() else path.read_text()
        for path in ray_dir.iterdir()
    }


def test_stop_removes_every_file_of_the_cluster_its_log_too(tmp_path, monkeypatch):
    """The guide says stop removes the cluster's files: NAME.log was left."""
    from gpkg_ray.remote import local_cluster

    monkeypatch.setenv("HOME", str(tmp_path))
    state_dir = Path(local_cluster.state_dir())
    state_dir.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a cluster whose processes already ended
    state = {"pid": gone.pid, "processes": [], "address": "127.0.0.1:1",
             "temp_dir": str(tmp_path / "ray-temp")}  # fmt: skip
    (state_dir / "lab.json").write_text(json.dumps(state))
    for suffix in (".token", ".log"):
        (state_dir / f"lab{suffix}").write_text("x")

    assert local_cluster.stop("lab")
    assert list(state_dir.iterdir()) == []


@e2e
def test_start_and_stop_say_where_a_cluster_started_outside_guild_is_managed(project):
    write_guild_config(project, {"geronimo": {"address": "127.0.0.1:6379"}})

    result = project.guild("remote", "start", "-y", "geronimo")

    assert result.returncode != 0
    assert "geronimo is a cluster started outside Guild: start it with `ray start " in (
        result.stderr
    )


UPSTREAM_GUILD_YML = """
- model: ''
  extends: gpkg.ray/tune
  operations:
    fetch:
      main: fetch
    prepare:
      main: prepare
      flags:
        tag: a
      requires:
        - operation: fetch
          target-type: link   # prepare's raw.txt is a link into fetch's run
    train:
      main: train
      flags:
        lr: 0.01
      requires:
        - operation: prepare
          select: [prepared.txt, raw.txt]   # raw.txt: fetch's, by its link
    evaluate:
      main: evaluate
      requires:
        - operation: train
    tune:
      config:
        steps: [train, evaluate]
        optimize:
          - max: acc_val
        space:
          lr: [0.01, 0.02]
"""

UPSTREAM_FILES = {
    "fetch.py": 'open("raw.txt", "w").write("fetched\\n")\n',
    "prepare.py": (
        'tag = "a"\n'
        'raw = open("raw.txt").read()\n'
        'open("prepared.txt", "w").write(f"{tag} {raw}")\n'
    ),
    "train.py": (
        "import json\n"
        "lr = 0.01\n"
        "prepared = open('prepared.txt').read().strip()\n"
        "raw = open('raw.txt').read().strip()\n"
        "print(f'loss: {lr}')\n"
        "json.dump({'lr': lr, 'prepared': prepared, 'raw': raw}, "
        "open('model.json', 'w'))\n"
    ),
    "evaluate.py": (
        "import json\n"
        "model = json.load(open('model.json'))\n"
        "print(f\"acc_val: {1 - model['lr']:.6f}\")\n"
    ),
}


@pytest.fixture(scope="module")
def upstream_tune(new_project, shared_cluster):
    """A tune on the shared cluster whose `train` requires `prepare`, a run
    from outside the trial (which requires `fetch` in turn): two prepare
    runs, the older marked, so that Guild's rule picks it, not the latest."""
    project = new_project()
    project.write("guild.yml", UPSTREAM_GUILD_YML)
    for name, text in UPSTREAM_FILES.items():
        project.write(name, text)
    remote = _remote(shared_cluster, **{"trial-cpus": 1})
    write_guild_config(project, {"geronimo": remote})
    for args in (["fetch"], ["prepare"], ["prepare", "tag=b"]):
        ran = project.guild("run", "-y", *args)
        assert ran.returncode == 0, ran.stdout + ran.stderr
    (marked,) = [r for r in project.runs_of("prepare") if r.get("flags")["tag"] == "a"]
    mark = project.guild("mark", "-y", marked.id)
    assert mark.returncode == 0, mark.stderr

    tuned = project.tune("cluster=geronimo", "max-trials=2")

    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    project.marked = marked
    return project


@e2e
def test_a_run_from_outside_the_trial_is_resolved_on_the_driver_and_sent(
    upstream_tune, shared_cluster
):
    project = upstream_tune
    (fetch,) = project.runs_of("fetch")
    trains = project.runs_of("train")
    assert len(trains) == 2
    for run in trains:
        assert run.status == "completed"
        # The marked prepare run, as Guild's rule picks it on the driver.
        deps = run.get("deps")["operation:prepare"]["operation:prepare"]
        assert deps["config"] == project.marked.id
        assert run.get("flags")["operation:prepare"] == project.marked.id
        assert run.get("ray_node")["node_id"] == shared_cluster.worker_node_id
        # The chain: prepare's raw.txt, a link into fetch's run, held there.
        model = json.loads(Path(run.dir, "model.json").read_text())
        assert model == {"lr": run.get("flags")["lr"], "prepared": "a fetched",
                         "raw": "fetched"}  # fmt: skip
    # The runs sent stay as they were at home, and leave the node with the tune.
    assert len(project.runs_of("prepare")) == 2
    assert [r.id for r in project.runs_of("fetch")] == [fetch.id]
    assert list(shared_cluster.worker_dir.glob("gpkg-ray-runs-*")) == []


@e2e
def test_runs_that_came_home_are_runs_of_the_project(upstream_tune):
    project = upstream_tune
    trains = project.runs_of("train")
    guildfile = str(project.path / "guild.yml")
    for run in trains:
        assert run.opref.pkg_name == guildfile
        assert run.get("env")["PROJECT_DIR"] == str(project.path)
        assert run.get("env")["GUILD_HOME"] == str(project.guild_home)
        assert run.get("op")["op-cmd"]["cmd-env"]["PROJECT_DIR"] == str(project.path)
    listed = project.guild("runs")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split() for line in listed.stdout.splitlines() if " train " in line]
    # As a local run of the project: no `(DIR)` after the op.
    assert [line[1] for line in lines] == ["train", "train"], listed.stdout
    assert not [line for line in lines if line[2].startswith("(")], listed.stdout
    assert "_ray_pkg" not in listed.stdout
    info = project.guild("runs", "info", trains[0].id)
    assert "_ray_pkg" not in info.stdout, info.stdout
    assert len(project.compare("-Fo", "train")) == 2
    cat = project.guild("cat", "-p", "model.json", trains[0].id)
    assert cat.returncode == 0 and '"prepared": "a fetched"' in cat.stdout
    # Its source code against the project's (not the copy Ray had on the node).
    with open(project.path / "train.py", "a") as f:
        f.write("# changed in the project since\n")
    diff = project.guild("diff", "--working", "-c", "diff -r", trains[0].id)
    assert "> # changed in the project since" in diff.stdout, diff.stdout + diff.stderr
    # A later `guild run` resolves a run that came home, as Guild's rule does.
    evaluated = project.guild("run", "-y", "evaluate")
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    (mine,) = [
        r for r in project.runs_of("evaluate") if "ray_node" not in r.attr_names()
    ]
    assert mine.status == "completed"
    resolved = mine.get("deps")["operation:train"]["operation:train"]["config"]
    assert resolved in {run.id for run in trains}


# Last of the tests on the shared cluster: it shuts it down.
@e2e
def test_status_says_when_the_cluster_is_down(project, shared_cluster):
    cluster = shared_cluster
    write_guild_config(project, {"geronimo": _remote(cluster)})

    cluster.shutdown()
    down = project.guild("remote", "status", "geronimo")

    assert down.returncode == 2
    assert error_lines(down) == [
        f"guild: remote geronimo is not available (cannot reach {cluster.address} "
        "(Connection refused): is the cluster's head node running there?)"
    ]
