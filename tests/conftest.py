"""Fixtures: a temp Guild project and Guild home, driven by the real `guild` CLI.

Every test gets its own HOME and GUILD_HOME, so a test can check that nothing was
written to the user's home (e.g. ~/.ray) and that only the runs it expects exist.
A module whose tests only read what one tune left shares one project (see
`module_project`).

A test that starts a `guild` process or Ray is marked `e2e`; the others make the
fast layer, `pytest -m "not e2e"`. A `guild` command of a test not marked e2e
fails (see `_require_e2e`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from gpkg_ray.processes import process_tree
from gpkg_ray.trial.step_run import GUILD_NOTES

GUILD = str(Path(sys.executable).parent / "guild")
REPO = Path(__file__).resolve().parent.parent
TUNE_TIMEOUT = 300
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PKG_RESOURCES_WARNING = "ignore:pkg_resources is deprecated as an API:UserWarning"


@dataclass
class Watched:
    """What a watched `guild run` did: its exit, output and process tree."""

    returncode: int
    output: str
    processes: list[psutil.Process] = field(default_factory=list)
    listeners: list[tuple[str, int, str]] = field(default_factory=list)
    """(ip, port, process name) of every listening socket seen in the tree."""


E2E_WORKERS = 3
"""Test workers for a run with e2e tests; GPKG_RAY_TEST_WORKERS overrides it.
Three on CI's 2 cores: an end-to-end test mostly waits on its processes (with
two workers the cores were idle ~60% of the suite), and its waits are on
events, not on a time a loaded machine might miss."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for `-n auto` (pyproject.toml): the end-to-end tests wait on
    processes most of the time, so three run at once (E2E_WORKERS); the fast
    layer (`-m "not e2e"`) runs in this process, quicker than workers
    start."""
    if "not e2e" in (config.option.markexpr or ""):
        return 0
    return int(os.getenv("GPKG_RAY_TEST_WORKERS", E2E_WORKERS))


SHARED_SETUPS = {
    "main_tune",
    "custom_tpe_tune",
    "grid_with_failures",
    "limited_tune",
    "tuned",
    "shared_cluster",
    "tpe_batch",
    "separate_hosts",
    "objectives_tune",
    "searched",
    "reported_tune",
    "ssh_cluster",
    "slurm_cluster",
}
"""Module fixtures that are a tune or a cluster, shared by the tests of their
module: those tests run on one worker, so it is made once."""


# tryfirst: pytest-xdist reads the groups in its own hook of this name, which
# ran first and found none.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Groups the tests of a shared setup for `--dist loadgroup`
    (pyproject.toml); every other test goes to whichever worker is free, so a
    module of long tests is spread over the workers."""
    for item in items:
        shared = sorted(SHARED_SETUPS & set(getattr(item, "fixturenames", ())))
        if shared:
            group = f"{item.module.__name__}:{shared[0]}"
            item.add_marker(pytest.mark.xdist_group(group))


_current_test: dict[str, bool] = {"e2e": True}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Notes whether the test about to run (and its fixtures) may start `guild`."""
    _current_test["e2e"] = item.get_closest_marker("e2e") is not None


def _require_e2e() -> None:
    if not _current_test["e2e"]:
        pytest.fail("this test starts `guild`: mark it e2e (pytest.mark.e2e)")


class Project:
    def __init__(self, path: Path, env: dict[str, str]):
        self.path = path
        self.env = env
        self.guild_home = Path(env["GUILD_HOME"])
        self.home = Path(env["HOME"])
        self.prefix: list[str] = []
        """Runs its `guild` commands elsewhere: `ip netns exec NS`, say."""

    def write(self, name: str, text: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
        return target

    def guild(
        self, *args: str, timeout: float = TUNE_TIMEOUT
    ) -> subprocess.CompletedProcess:
        _require_e2e()
        return subprocess.run(
            [*self.prefix, GUILD, *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def tune(self, *flags: str, op: str = "tune") -> subprocess.CompletedProcess:
        return self.guild("run", "-y", op, *flags)

    def watch_tune(
        self,
        *flags: str,
        op: str = "tune",
        during: Callable[[subprocess.Popen], None] | None = None,
        sockets: bool = False,
    ) -> Watched:
        """Runs a tune, sampling its process tree (and with `sockets`, its
        listening sockets: see watch_run).

        `during(proc)` is called at each sample while the tune runs. The tune
        runs in a session of its own, as in a terminal: `os.killpg(proc.pid,
        SIGINT)` is a Ctrl-C.
        """
        return self.watch_run(op, *flags, during=during, sockets=sockets)

    def watch_restart(self, run_id: str, *flags: str) -> Watched:
        """Restarts a run (`guild run --restart`), watched as watch_tune does."""
        return self.watch_run("--restart", run_id, *flags)

    def watch_run(
        self,
        *args: str,
        during: Callable[[subprocess.Popen], None] | None = None,
        sockets: bool = False,
    ) -> Watched:
        """`guild run -y ARGS`, watched: see watch_tune. With `sockets`, the
        listening sockets of its processes are sampled too (a fifth of a core
        while a tune runs: only for the test that checks them)."""
        _require_e2e()
        log = self.path.parent / f"run-{time.monotonic_ns()}-output.txt"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [*self.prefix, GUILD, "run", "-y", *args],
                cwd=self.path,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            seen: dict[int, psutil.Process] = {}
            listeners: set[tuple[str, int, str]] = set()
            deadline = time.monotonic() + TUNE_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                for p in process_tree(proc.pid):
                    seen.setdefault(p.pid, p)
                    if sockets:
                        listeners.update(_listening(p))
                if during is not None:
                    during(proc)
                time.sleep(0.2)
            if proc.poll() is None:
                proc.kill()
                pytest.fail(f"guild run {args} did not finish in {TUNE_TIMEOUT} s")
        return Watched(
            proc.returncode, log.read_text(), list(seen.values()), sorted(listeners)
        )

    def compare(self, *args: str) -> list[dict[str, str]]:
        result = self.guild("compare", "--csv", "-", *args)
        assert result.returncode == 0, result.stderr
        return list(csv.DictReader(io.StringIO(result.stdout)))

    def run_ids(self) -> list[str]:
        runs = self.guild_home / "runs"
        return sorted(os.listdir(runs)) if runs.exists() else []

    def run(self, run_id: str):
        from guild import run as guild_run

        return guild_run.Run(run_id, str(self.guild_home / "runs" / run_id))

    def runs_of(self, op: str) -> list:
        runs = map(self.run, self.run_ids())
        # A run Guild is creating has no opref yet.
        return [r for r in runs if r.opref is not None and r.opref.op_name == op]

    def statuses(self, op: str | None = None) -> dict[str, str]:
        """Run id -> Guild status of every run (of `op`, if given)."""
        runs = self.runs_of(op) if op else map(self.run, self.run_ids())
        return {r.id: r.status for r in runs}

    def tune_run(self, op: str = "tune"):
        (tune_run,) = self.runs_of(op)
        return tune_run

    def trials(self, tune_run=None) -> list[dict]:
        """The trials a tune run (by default the one tune run) wrote to its
        trials.json."""
        tune_run = tune_run or self.tune_run()
        with open(os.path.join(tune_run.dir, "trials.json")) as f:
            return json.load(f)["trials"]

    def record_links(self, record) -> dict[str, str]:
        """Step name (`STEP~N` for an earlier attempt's) -> run id, as a trial
        record run names its step runs (its `step_runs` attr), each of whose
        files it links from the step's folder (the links checked here)."""
        runs = record.get("step_runs") or {}
        for name, run_id in runs.items():
            folder = os.path.join(record.dir, name)
            for entry in os.listdir(folder) if os.path.isdir(folder) else []:
                target = os.readlink(os.path.join(folder, entry))
                assert target == os.path.join("..", "..", run_id, entry), target
        return runs

    def record_of(self, trial: dict):
        """The trial record run that links to the train run of `trial` (an
        entry of trials.json)."""
        (record,) = [
            r
            for r in self.runs_of("trial")
            if self.record_links(r).get("train") == trial["runs"]["train"]
        ]
        return record

    def output(self, run) -> str:
        """What a run printed so far (Guild's output log)."""
        path = Path(run.guild_path("output"))
        return path.read_text() if path.exists() else ""


def _listening(proc: psutil.Process):
    try:
        name = proc.name()
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                yield (conn.laddr.ip, conn.laddr.port, name)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return


def still_running(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    return alive


def closed_address() -> str:
    """127.0.0.1:PORT where nothing listens (a port just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def wait_for(condition: Callable[[], object], timeout: float = 30) -> None:
    """Waits until `condition()` is true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(0.05)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """Lines a failed `guild run` printed, less Guild's own progress notes."""
    text = result.stdout + result.stderr
    return [
        line
        for line in text.splitlines()
        if line.strip() and line.strip() not in GUILD_NOTES
    ]


@pytest.fixture(scope="session")
def matplotlib_config(tmp_path_factory) -> Path:
    """One matplotlib config dir for the whole session: its font cache is built
    once (~0.6 s), not in every test's new HOME."""
    return tmp_path_factory.mktemp("matplotlib")


def make_guild_env(base: Path, matplotlib_config: Path) -> dict[str, str]:
    """The environment of a test's `guild` commands: this one, less Ray's, Guild's
    and a run's variables, with its own HOME and GUILD_HOME under `base`."""
    home = base / "home"
    guild_home = base / "guild-home"
    home.mkdir()
    guild_home.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RAY_", "GUILD_", "RUN_", "FLAG_", "TUNE_"))
    }
    env.update(
        HOME=str(home),
        GUILD_HOME=str(guild_home),
        NO_PIP_FREEZE="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
        MPLCONFIGDIR=str(matplotlib_config),
        # Guild 0.9 imports pkg_resources; setuptools 77-80 (PyTorch needs 77 or
        # later) warns about it on every command, before the lines tests read.
        PYTHONWARNINGS=PKG_RESOURCES_WARNING,
    )
    return env


def make_project(base: Path, matplotlib_config: Path) -> Project:
    """A project in `base`/project, with its own HOME and GUILD_HOME in `base`."""
    path = base / "project"
    path.mkdir()
    return Project(path, make_guild_env(base, matplotlib_config))


@pytest.fixture
def guild_env(tmp_path: Path, matplotlib_config: Path) -> dict[str, str]:
    return make_guild_env(tmp_path, matplotlib_config)


@pytest.fixture
def project(tmp_path: Path, guild_env: dict[str, str]) -> Project:
    path = tmp_path / "project"
    path.mkdir()
    return Project(path, guild_env)


@pytest.fixture(scope="module")
def new_project(
    tmp_path_factory: pytest.TempPathFactory, matplotlib_config: Path
) -> Callable[[], Project]:
    """Makes projects for module-scoped fixtures: one tune that several tests
    read, each test checking one thing of it, is run once per module."""

    def new() -> Project:
        return make_project(tmp_path_factory.mktemp("shared"), matplotlib_config)

    return new


MORE_PLOTS = {"importance.png", "parallel.png", "contour.png"}
"""Plots a report shows when its trials make them (two values searched, a few
trials completed): those of importance, parallel coordinates and the map of
the two most important values."""


def check_report(
    run_dir: Path, expect_curves: bool, more: set[str] | None = None
) -> None:
    """The report's page exists and shows PNG files that are valid images;
    everything it links to is in the report folder (copied alone, it works),
    trials.csv too. `more`: which of MORE_PLOTS it shows (None: any)."""
    import shutil
    import tempfile

    from PIL import Image

    page = (run_dir / "report" / "index.html").read_text()
    with tempfile.TemporaryDirectory() as elsewhere:
        copy = Path(elsewhere) / "report"
        shutil.copytree(run_dir / "report", copy)
        for target in re.findall(r'(?:src|href)="([^"]+)"', page):
            assert (copy / target).resolve().is_relative_to(copy.resolve()), target
            assert (copy / target).is_file(), target
    assert 'href="trials.csv"' in page
    assert (run_dir / "report" / "trials.csv").read_text() == (
        run_dir / "trials.csv"
    ).read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    expected = {"objective.png", "params.png"} | (
        {"curves.png"} if expect_curves else set()
    )
    if more is None:
        more = set(images) & MORE_PLOTS
    assert set(images) == expected | more
    assert "http-equiv" not in page  # the tune has ended: no reloads
    for name in images:
        path = run_dir / "report" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 300


def write_guild_config(project: Project, clusters: dict[str, dict]) -> None:
    """A guild-config.yml in the project (Guild reads it from the cwd) that
    defines each cluster as a ray-cluster remote."""
    import yaml

    remotes = {name: {"type": "ray-cluster", **c} for name, c in clusters.items()}
    (project.path / "guild-config.yml").write_text(yaml.safe_dump({"remotes": remotes}))


def remote_status_error(project: Project, name: str) -> str | None:
    """What `guild remote status NAME` in `project` stops with on a remote whose
    config is bad, checked in this process through Guild's remote API (as the
    CLI: the cwd's guild-config.yml, the project's HOME): its one error line
    (less `guild: `), or None when the config passes and the status is asked
    of the cluster (do not call it then for a cluster that is up: this process
    would ask)."""
    from unittest import mock

    from guild import config
    from guild import remote as remotelib

    with (
        mock.patch.dict(os.environ, project.env, clear=True),
        config.SetCwd(str(project.path)),
    ):
        remote = remotelib.for_name(name)
        try:
            remote.status()
        except remotelib.Down:
            return None
        except remotelib.OperationError as e:
            return str(e)
    return None
