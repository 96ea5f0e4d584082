"""A Ray cluster of separate hosts: the guide's two-machine commands, run as
written, on hosts that are Linux network namespaces of this machine
(tests/hosts.py): a head, where the user's `guild run tune cluster=geronimo`
runs too, and two workers, joined by a network of their own (10.X.Y.0/24,
whose addresses exist only in those namespaces).

Each worker has its own HOME and TMPDIR and cannot see the driver's project,
HOME, GUILD_HOME or temp dir (each covered by an empty tmpfs in the worker's
mount namespace): whatever reaches a worker, or comes home from it, went
through Ray. Only the file that releases a held `train` is seen by all
(the test's hand, not the tune's data).

One cluster and one tune for the module: the user runs `prepare` at home,
then a tune of two trials whose `train` requires it, one trial on each
worker, during which one worker is switched off (its trial runs again on the
other).
Needs root (CI runs as root); skipped with the reason elsewhere.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Project, Watched, still_running, wait_for
from hosts import Host, Network, missing_requirement, routes
from projects import tune_config, write_project

e2e = pytest.mark.e2e  # real `ray start`, `guild` runs and Ray
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
GUIDE_A, GUIDE_B = "10.0.0.5", "10.0.0.6"
"""The guide's addresses of machine A (head, driver) and B (a worker)."""

SPACE = "lr: loguniform[1e-3:1e-1]\n"
ONLY_ON_A = "a-file-of-the-head"

PREPARE_OP = """
    prepare:
      main: prepare
"""

PREPARE = """
import secrets

with open("data.txt", "w") as f:
    f.write(secrets.token_hex(16))  # made here, at run time: only this run has it
"""

TRAIN_READS_DATA = """
with open("data.txt") as f:  # prepare's file, resolved by Guild
    data = f.read()
with open("seen.txt", "w") as f:
    f.write(data)
"""


def guide_section(heading: str) -> str:
    """The guide's text under `heading`, up to the next heading of its level."""
    text = GUIDE.read_text()
    level = heading.split(" ")[0] + " "
    start = text.index(heading + "\n")
    end = text.find("\n" + level, start + len(heading))
    return text[start : end if end > 0 else None]


def indented_block(section: str, containing: str) -> str:
    """The code block (lines indented 4 spaces) of `section` with `containing`."""
    blocks = re.findall(r"(?:^(?: {4}.*)?\n)+", section, flags=re.M)
    (block,) = [b for b in blocks if containing in b]
    return textwrap.dedent(block).strip() + "\n"


def fenced_block(section: str, language: str) -> str:
    (block,) = re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.M | re.S)
    return block


def guide_commands() -> dict[str, str]:
    """The guide's commands for machines A and B, and its remote config."""
    section = guide_section("### Two machines")
    return {
        "head": indented_block(section, "ray start --head"),
        "worker": indented_block(section, "ray start --address"),
        "remote": fenced_block(section, "yaml"),
        "run": indented_block(section, "guild run tune cluster="),
    }


def test_the_guide_has_the_commands_this_module_runs():
    """Fast: the e2e tests below run these blocks of the guide as written."""
    commands = guide_commands()

    assert f"ray start --head --node-ip-address={GUIDE_A}" in commands["head"]
    assert "~/.ray/geronimo.token" in commands["head"]
    assert (
        f"--address={GUIDE_A}:6379 --node-ip-address={GUIDE_B}" in (commands["worker"])
    )
    assert f"address: {GUIDE_A}:6379" in commands["remote"]
    assert "guild remote status geronimo" in commands["run"]


@dataclass
class Cluster:
    """The hosts, the user's project on the head and what the tests saw."""

    network: Network
    project: Project
    head: Host
    workers: list[Host]
    release: Path
    """Touched to let held `train` runs go on (every host sees it)."""
    token: str = ""
    worker_cpus: int = 0
    watched: list[Watched] = field(default_factory=list)
    left: dict | None = None

    def by_ip(self, ip: str) -> Host:
        (host,) = [h for h in self.network.hosts.values() if h.ip == ip]
        return host

    def shutdown(self) -> dict:
        """Switches every host off and removes the network (once); the
        processes that were still in a namespace then."""
        if self.left is None:
            self.left = self.network.remove()
        return self.left


def _driver_path() -> str:
    """This venv first: the nodes run the same Python environment."""
    return f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def _host_env(host: Host, home: Path) -> dict[str, str]:
    """A host's own environment: its HOME and TMPDIR, nothing of the test's."""
    return {
        "PATH": _driver_path(),
        "HOME": str(home),
        "TMPDIR": str(host.tmp),
        "LANG": "C.UTF-8",
        "PYTHONWARNINGS": "ignore:pkg_resources is deprecated as an API:UserWarning",
    }


QUICK_NODE_DEATH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
"""The head's GCS takes a host that went off for dead after 3 failed checks a
second apart (Ray's default: 5, 3 s apart): the tune that loses a host waits
for that, not for what gpkg.ray does then. As tests/ray_cluster.py's
HEALTH_CHECKS (whose keys tests/test_local_ray.py checks), set in the head's
environment: the guide's commands stay as they are."""


def _as_on(commands: str, host: Host, head: Host) -> str:
    """The guide's commands with the addresses of this network."""
    return commands.replace(GUIDE_A, head.ip).replace(GUIDE_B, host.ip)


@pytest.fixture(scope="module")
def separate_hosts(new_project):
    """The guide's cluster on separate hosts; the user's project and Guild
    home on the head. Everything is switched off and removed at the end,
    whether or not the tests passed."""
    reason = missing_requirement()
    if reason:
        pytest.skip(reason)
    project = new_project()
    network = Network(["head", "w1", "w2"])
    head, *workers = network.hosts.values()
    release = network.dir / "signals" / "release"
    cluster = Cluster(network, project, head, workers, release)
    try:
        network.create()
        release.parent.mkdir()
        _start_hosts(cluster, guide_commands())
        yield cluster
    finally:
        cluster.shutdown()


def _start_hosts(cluster: Cluster, guide: dict[str, str]) -> None:
    head, project, network = cluster.head, cluster.project, cluster.network
    # The user's machine: the project's HOME is the head's (its token, the
    # Guild config), and its guild commands run in the head's network.
    project.env.update(PATH=_driver_path(), TMPDIR=str(head.tmp))
    project.prefix = head.exec_prefix()
    head_env = _host_env(head, project.home) | QUICK_NODE_DEATH
    network.boot(head, _as_on(guide["head"], head, head), head_env)
    network.wait_up(head)
    token = project.home / ".ray" / "geronimo.token"
    cluster.token = token.read_text().strip()
    (head.tmp / ONLY_ON_A).touch()
    # What a worker must not see: the user's files and the other hosts'.
    users = [project.path.parent, head.dir]
    for worker in cluster.workers:
        (worker.home / ".ray").mkdir()
        shutil.copy2(token, worker.home / ".ray" / "geronimo.token")  # scp
        hidden = users + [w.dir for w in cluster.workers if w is not worker]
        commands = _as_on(guide["worker"], worker, head)
        network.boot(worker, commands, _host_env(worker, worker.home), hidden)
    for worker in cluster.workers:  # booting at once
        network.wait_up(worker)
    for worker in cluster.workers:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log
    remote = _as_on(guide["remote"], head, head)
    (project.home / ".guild").mkdir(exist_ok=True)
    (project.home / ".guild" / "config.yml").write_text(remote)
    write_project(project, tune_config(SPACE + f"train:hold: {cluster.release}\n"))
    # train requires a prepare run, which the user makes at home.
    guild_yml = project.path / "guild.yml"
    text = guild_yml.read_text()
    requires = "      requires:\n        - operation: prepare\n"
    text = text.replace("      main: train\n", "      main: train\n" + requires, 1)
    guild_yml.write_text(text + PREPARE_OP)
    project.write("prepare.py", PREPARE)
    with open(project.path / "train.py", "a") as f:
        f.write(TRAIN_READS_DATA)


@pytest.fixture(scope="module")
def status(separate_hosts) -> list[list[str]]:
    """`guild remote status geronimo`, as the guide runs it on A: its rows."""
    cluster = separate_hosts
    result = cluster.project.guild("remote", "status", "geronimo")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    cluster.worker_cpus = int(float(rows[-1][3]))
    return [result.stdout.splitlines()[0], *rows]


@e2e
def test_the_guides_commands_made_a_cluster_of_separate_hosts(separate_hosts, status):
    cluster = separate_hosts
    head, w1, w2 = cluster.network.hosts.values()
    title, *rows = status

    assert title.startswith(f"geronimo: Ray cluster at {head.ip}:6379, 3 nodes up")
    by_address = {row[1]: row for row in rows}
    assert set(by_address) == {head.ip, w1.ip, w2.ip}
    assert by_address[head.ip][3] == "0" and by_address[head.ip][-1] == "head"
    for worker in (w1, w2):
        assert by_address[worker.ip][-1] == "worker"
        assert by_address[worker.ip][3] == str(cluster.worker_cpus)
    # Their network reaches nothing else: no route out of the subnet.
    for host in (head, w1, w2):
        shown = routes(host)
        subnet = head.ip.rsplit(".", 1)[0] + ".0/24 "
        assert shown and all(route.startswith(subnet) for route in shown), shown
    # The head's address file is in its TMPDIR, not the machine's /tmp/ray.
    address_file = head.tmp / "ray" / "ray_current_cluster"
    assert address_file.read_text().strip() == f"{head.ip}:6379"


@e2e
def test_a_worker_sees_none_of_the_users_files(separate_hosts):
    cluster = separate_hosts
    project = cluster.project
    # A worker's Ray takes the head's temp dir (as across machines) and made
    # that path on its own disk, which does not hold the head's files.
    heads = cluster.head.tmp / ONLY_ON_A
    others = [w.home / ".ray" for w in cluster.workers]
    for worker in cluster.workers:
        theirs = [path for path in others if not path.is_relative_to(worker.dir)]
        for path in [project.path, project.guild_home, project.home, heads, *theirs]:
            seen = worker.run("test", "-e", str(path))
            assert seen.returncode == 1, (worker.name, path)
        mine = worker.run("cat", str(worker.home / ".ray" / "geronimo.token"))
        assert mine.stdout.strip() == cluster.token
        assert worker.run("test", "-e", str(cluster.release.parent)).returncode == 0


@pytest.fixture(scope="module")
def tune_with_a_host_lost(separate_hosts, status):
    """`prepare`, run at home by the user (train requires it); then a tune of
    two trials at once, one per worker (each takes a worker's CPUs); once
    both trains ran their first epoch and came home in part, the first one's
    host is switched off, then the trains go on. Its trial runs again
    (`max-failures=1`) on the other worker."""
    cluster = separate_hosts
    project = cluster.project
    prepared = project.guild("run", "-y", "prepare")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    seen: dict = {}

    def switch_off_a_worker_once_both_trials_run(proc):
        running = [
            run
            for run in project.runs_of("train")
            if run.status == "running" and "step: 0" in project.output(run)
        ]
        if seen or len(running) < 2:
            return
        first = min(running, key=lambda run: run.get("started"))
        host = cluster.by_ip(first.get("ray_node")["ip"])
        seen.update(run=first.id, host=host, running=[r.id for r in running])
        host.power_off()
        wait_for(lambda: host.pids() == [], timeout=10)
        cluster.release.touch()

    watched = project.watch_tune(
        "cluster=geronimo",
        "max-trials=2",
        "max-failures=1",
        f"cpus={cluster.worker_cpus}",
        during=switch_off_a_worker_once_both_trials_run,
    )
    cluster.watched.append(watched)
    return watched, seen


@e2e
def test_trials_ran_on_the_workers_and_their_runs_came_home(
    separate_hosts, tune_with_a_host_lost
):
    cluster, project = separate_hosts, separate_hosts.project
    watched, seen = tune_with_a_host_lost
    assert watched.returncode == 0, watched.output
    assert seen, "two trains were never seen running at home at once"
    steps = project.runs_of("train") + project.runs_of("evaluate")
    ips = {run.id: run.get("ray_node")["ip"] for run in steps}
    names = {run.id: run.get("ray_node")["hostname"] for run in steps}
    # Both workers ran trials at once; none ran on the head (no CPUs there).
    assert {ips[run_id] for run_id in seen["running"]} == {
        w.ip for w in cluster.workers
    }
    assert set(ips.values()) <= {w.ip for w in cluster.workers}
    assert all(names[i] == cluster.by_ip(ip).name for i, ip in ips.items())
    for run in steps:
        if run.id == seen["run"]:
            continue  # the lost attempt's: see the next test
        assert run.status == "completed", (run.id, run.status)
        assert not Path(run.guild_path("LOCK.remote")).exists()
        assert Path(run.dir, "train.py").exists(), "source code came home"
        assert "Traceback" not in project.output(run)
    for run in project.runs_of("train"):
        if run.id != seen["run"]:
            model = json.loads(Path(run.dir, "model.json").read_text())
            assert model["lr"] == run.get("flags")["lr"]
            assert "step: 1" in project.output(run)
    accs = [float(row["acc_val"]) for row in project.compare("-Fo", "evaluate")]
    lrs = [
        r.get("flags")["lr"] for r in project.runs_of("train") if r.id != seen["run"]
    ]
    assert sorted(accs) == pytest.approx(sorted(1 - lr for lr in lrs), abs=1e-5)
    assert "2 trials on cluster=geronimo" in watched.output


@e2e
def test_a_required_upstream_run_reached_the_workers(
    separate_hosts, tune_with_a_host_lost
):
    """Issue 16 section 1: prepare's run, made at home, resolved on the
    driver and sent to each worker that ran a train (no shared filesystem)."""
    cluster, project = separate_hosts, separate_hosts.project
    watched, seen = tune_with_a_host_lost
    assert watched.returncode == 0, watched.output
    (prepare,) = project.runs_of("prepare")  # no copy of it came home as a run
    data = Path(prepare.dir, "data.txt").read_text()
    trains = [r for r in project.runs_of("train") if r.id != seen["run"]]
    ran_on = set()
    for run in trains:
        assert Path(run.dir, "seen.txt").read_text() == data, run.id
        assert prepare.id in json.dumps(run.get("deps")), run.get("deps")
        ran_on.add(run.get("ray_node")["ip"])
    lost = project.run(seen["run"])
    assert prepare.id in json.dumps(lost.get("deps")), "the lost host had it too"
    assert ran_on | {lost.get("ray_node")["ip"]} == {w.ip for w in cluster.workers}


@e2e
def test_a_worker_switched_off_mid_trial_gives_a_retry_elsewhere(
    separate_hosts, tune_with_a_host_lost
):
    cluster, project = separate_hosts, separate_hosts.project
    watched, seen = tune_with_a_host_lost
    assert watched.returncode == 0, watched.output
    lost_host = seen["host"]
    (survivor,) = [w for w in cluster.workers if w is not lost_host]
    lost = project.run(seen["run"])
    assert lost.status == "error"
    assert lost.get("ray_node")["ip"] == lost_host.ip
    assert lost.get("ray_node_lost")
    assert "step: 0" in project.output(lost), "what came home before is kept"
    assert not Path(lost.guild_path("LOCK.remote")).exists()
    trains = [r for r in project.runs_of("train") if r.id != lost.id]
    assert len(trains) == 2  # the other trial's, and the lost one's again
    for run in trains + project.runs_of("evaluate"):
        assert run.get("ray_node")["ip"] == survivor.ip
    assert "runs again (attempt 2): attempt 1 failed: its Ray worker was lost (" in (
        watched.output
    )
    assert "2 trials: 2 completed" in watched.output
    records = [project.record_links(r) for r in project.runs_of("trial")]
    (again,) = [links for links in records if "train~1" in links]
    assert again["train~1"] == lost.id
    assert lost_host.pids() == [], "the switched-off host ran on"


# Last: it switches the hosts off.
@e2e
def test_nothing_of_the_test_is_left(separate_hosts):
    cluster = separate_hosts
    drivers = [p for watched in cluster.watched for p in watched.processes]

    left = cluster.shutdown()

    assert left == {}, "processes were left in the hosts' namespaces"
    assert still_running(drivers) == []
    names = {h.netns for h in cluster.network.hosts.values()}
    listed = Network.namespaces()
    assert names.isdisjoint(listed)
    assert not cluster.network.dir.exists()
