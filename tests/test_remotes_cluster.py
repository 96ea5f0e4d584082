"""`type: remotes-cluster`: a Ray cluster of the user's own servers, Guild
ssh remotes, started by `guild remote start` (gpkg_ray.remote.remotes_cluster).

End to end: two members, each a separate host (tests/hosts.py: a network
namespace with an address of its own) running OpenSSH's server with key auth
(a key the test makes) and its own HOME (root's home in its
/etc/passwd); the user's machine, where Guild, the head and the driver run, is a
third host of that network. The members use this machine's Python
environment (the same filesystem: the versions match), but see none of the
user's files. One cluster for the module: a start that fails on an
unreachable member, the start, status, a tune whose runs come home, the
stop, then every process of the test gone on every host and the namespaces
removed (even when a test fails). Needs root and sshd (CI has both); skipped
with the reason elsewhere.

Fast: the config's errors, the version check's lines, the ssh command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import Project, Watched, still_running
from hosts import Host, Network, missing_requirement
from projects import tune_config, write_project

from gpkg_ray.errors import ClusterError
from gpkg_ray.remote import remotes_cluster
from gpkg_ray.remote.ssh_member import Member, member_for_config

e2e = pytest.mark.e2e  # real sshd, `guild remote start`, Ray and `guild run`s
SSHD = "/usr/sbin/sshd"
ACTIVATE = f"export PATH={Path(sys.executable).parent}:$PATH"
"""How a member activates its Python environment (Guild's `venv-activate`):
this one. Not `venv-path`: a venv's `activate` script names the path the
venv was made at, and a copied venv's is another."""

# --- fast ------------------------------------------------------------------


def _remotes(**cluster) -> dict:
    return {
        "p1": {"type": "ssh", "host": "pawnee-1", "user": "ml", "venv-path": "~/e"},
        "p2": {"type": "ssh", "host": "pawnee-2", "port": 2222},
        "box": {"type": "ray-cluster", "address": "10.0.0.5:6379"},
        "c": {"type": "remotes-cluster", "remotes": ["p1", "p2"], **cluster},
    }


def _error(**cluster) -> str:
    remotes = _remotes(**cluster)
    with pytest.raises(ClusterError) as e:
        remotes_cluster.remotes_cluster("c", remotes["c"], remotes)
    return str(e.value)


def test_a_remotes_cluster_joins_its_ssh_members():
    remotes = _remotes(port=6390)
    cluster = remotes_cluster.remotes_cluster("c", remotes["c"], remotes)
    assert [m.name for m in cluster.members] == ["p1", "p2"]
    assert cluster.port == 6390 and cluster.address is None
    p1, p2 = cluster.members
    assert p1.target == "ml@pawnee-1" and p1.activate == ("source ~/e/bin/activate",)
    assert p2.target == "pawnee-2" and p2.port == 2222 and p2.activate == ()


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ({"remotes": []}, "remote 'c': remotes must list its members"),
        ({"remotes": ["p1", "nope"]}, "member 'nope' is not a remote in your Guild"),
        ({"remotes": ["p1", "box"]}, "member 'box' is of type 'ray-cluster', not ssh"),
        ({"remotes": ["p1", "p1"]}, "a member is listed twice"),
        ({"head": "p1"}, "unknown key 'head' (a remotes-cluster remote takes"),
        ({"port": 0}, "port must be 1-65535, not '0'"),
        ({"address": "10.0.0.5:6379"}, "address is this machine's address"),
    ],
)
def test_a_bad_remotes_cluster_is_one_line_naming_the_key(cluster, expected):
    assert expected in _error(**cluster)


def test_the_environment_is_activated_in_guilds_order():
    def lines(**raw):
        return member_for_config("c", "m", {"type": "ssh", "host": "h", **raw}).activate

    assert lines(**{"venv-activate": "source x", "venv-path": "/v"}) == ("source x",)
    assert lines(**{"conda-env": "/c", "venv-path": "/v"})[-1] == "conda activate '/c'"
    assert lines(**{"guild-env": "/g"}) == ("source /g/bin/activate",)


def test_the_ssh_command_uses_the_members_guild_settings():
    member = Member(
        "m", "h", user="u", port=2200, private_key="/k", connect_timeout=4,
        activate=("source /v/bin/activate",),
    )  # fmt: skip
    argv = member.ssh_argv(member.shell_command(["python3", "-m", "x", "start"]))
    assert argv[:2] == ["ssh", "-oStrictHostKeyChecking=no"]
    assert "-oBatchMode=yes" in argv and "-oConnectTimeout=4" in argv
    assert argv[argv.index("-i") + 1] == "/k" and argv[argv.index("-p") + 1] == "2200"
    assert argv[-2:] == [
        "u@h",
        "set -e; source /v/bin/activate; python3 -m x start",
    ]


def test_a_version_mismatch_is_one_line_with_both_versions():
    mine = {"python": "3.11.7", "ray": "2.60.0", "gpkg.ray": "0.1.0"}
    assert remotes_cluster.version_problem(dict(mine), mine) is None
    assert remotes_cluster.version_problem({**mine, "python": "3.11.9"}, mine) == (
        "Python 3.11.9 there, Python 3.11.7 here: Ray needs the same versions on "
        "every host"
    )
    assert remotes_cluster.version_problem({**mine, "ray": "2.9.3"}, mine).startswith(
        "Ray 2.9.3 there, Ray 2.60.0 here"
    )
    missing = {"python": "3.11.7", "ray": "2.60.0", "gpkg_ray_error": "No module"}
    problem = remotes_cluster.version_problem(missing, mine)
    assert problem.startswith("gpkg.ray is not importable there (No module")


def test_a_tune_finds_the_head_that_start_recorded(tmp_path, monkeypatch):
    """`cluster=c` is the ray-cluster at the head's address, with the token
    of the start; before any start, one line saying how to start it."""
    from gpkg_ray.remote import config

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(config, "defined_remotes", lambda: _remotes(**{"pip": ["x"]}))
    with pytest.raises(ClusterError) as e:
        config.cluster_for_name("c")
    assert str(e.value) == (
        "cluster 'c' is not started: start it with `guild remote start c`"
    )
    state = {"kind": "remotes-cluster", "address": "10.0.0.5:6390", "head": {}}
    remotes_cluster._write_state("c", state)
    remotes_cluster._new_token("c")

    cluster = config.cluster_for_name("c")

    assert cluster.address == "10.0.0.5:6390" and cluster.pip == ("x",)
    assert len(cluster.auth_token()) == 64


def test_the_guide_has_the_commands_this_module_runs():
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text()
    start = guide.index("### Your own servers\n")
    section = guide[start : guide.index("\n### ", start + 1)]
    assert "type: remotes-cluster\n    remotes: [pawnee-1, pawnee-2]" in section
    for command in ("start", "status", "stop"):
        assert f"    guild remote {command} crazyhorse\n" in section
    assert "    guild run tune cluster=crazyhorse\n" in section


# --- end to end ------------------------------------------------------------


@dataclass
class SshCluster:
    network: Network
    project: Project
    here: Host
    members: list[Host]
    baseline: dict[str, set[int]] = field(default_factory=dict)
    """Each member's processes before the cluster: its sshd, its init."""
    watched: list[Watched] = field(default_factory=list)
    results: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    token: str = ""
    left: dict | None = None

    def shutdown(self) -> dict:
        if self.left is None:
            self.left = self.network.remove()
        return self.left


def _missing() -> str | None:
    if not os.path.exists(SSHD):
        return f"remotes-cluster tests need OpenSSH's server ({SSHD}): openssh-server"
    return missing_requirement()


def _sshd_config(host: Host) -> Path:
    conf = host.dir / "sshd_config"
    conf.write_text(
        f"ListenAddress {host.ip}\n"
        f"HostKey {host.dir / 'host_key'}\n"
        f"AuthorizedKeysFile {host.dir / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "StrictModes no\n"
        "UsePAM no\n"
        f"PidFile {host.dir / 'sshd.pid'}\n"
    )
    return conf


def _passwd_with_root_home(where: Path, home: Path) -> Path:
    """A copy of /etc/passwd in `where` whose root has the home `home`."""
    lines = Path("/etc/passwd").read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root":
            fields[5] = str(home)
            lines[i] = ":".join(fields)
    path = where / "passwd"
    path.write_text("\n".join(lines) + "\n")
    return path


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
    )


def _boot_member(cluster: SshCluster, host: Host, user_key: Path) -> None:
    """sshd on the host, whose root has a home of the host's own (its
    /etc/passwd says so: sshd gives a session HOME from it); the user's files
    and the other hosts' hidden."""
    _keygen(host.dir / "host_key")
    shutil.copy(f"{user_key}.pub", host.dir / "authorized_keys")
    conf = _sshd_config(host)
    commands = (
        f"mount --bind {_passwd_with_root_home(host.dir, host.home)} /etc/passwd\n"
        f"{SSHD} -D -e -f {conf} 2>>{host.dir / 'sshd.log'} &\n"
        f"while [ ! -s {host.dir / 'sshd.pid'} ]; do sleep 0.1; done"
    )
    others = [h.dir for h in cluster.network.hosts.values() if h is not host]
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
    hidden = [cluster.project.path.parent, *others]
    cluster.network.boot(host, commands, env, hidden)


def _guild_config(cluster: SshCluster, key: Path) -> str:
    def member(host: Host) -> dict:
        return {"type": "ssh", "host": host.ip, "private-key": str(key),
                "venv-activate": ACTIVATE, "connect-timeout": 5}  # fmt: skip

    m1, m2 = cluster.members
    subnet = m1.ip.rsplit(".", 1)[0]
    remotes = {
        "m1": member(m1),
        "m2": member(m2),
        "gone": {**member(m1), "host": f"{subnet}.99", "connect-timeout": 2},
        "crazyhorse": {"type": "remotes-cluster", "remotes": ["m1", "m2"]},
        "lost": {"type": "remotes-cluster", "remotes": ["m1", "m2", "gone"]},
    }
    return yaml.safe_dump({"remotes": remotes})


@pytest.fixture(scope="module")
def ssh_cluster(new_project):
    """The hosts, sshd on the members, the user's project on `here`; what
    the module's checks read: a start that failed, the start, the status,
    the tune, the stop. Everything is removed at the end, pass or fail."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    project = new_project()
    network = Network(["here", "m1", "m2"])
    here, *members = network.hosts.values()
    cluster = SshCluster(network, project, here, members)
    try:
        network.create()
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation
        key = network.dir / "user_key"
        _keygen(key)
        for host in members:
            _boot_member(cluster, host, key)
        for host in members:
            network.wait_up(host)
            cluster.baseline[host.name] = set(host.pids())
        # The user's machine: its guild commands in `here`'s network, root's
        # home there the project's HOME (ssh reads ~/.ssh of the passwd home,
        # not $HOME): the hosts' keys ssh records go there, not to this
        # machine's /root.
        passwd = _passwd_with_root_home(here.dir, project.home)
        bind = 'mount --bind "$0" /etc/passwd && exec "$@"'
        project.prefix = [*here.exec_prefix(), "unshare", "--mount", "sh", "-c",
                          bind, str(passwd)]  # fmt: skip
        project.env.update(
            PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin:/usr/sbin:/sbin",
            # Short: Ray's sockets go in the head's temp dir there.
            TMPDIR=str(here.dir),
        )
        (project.home / ".guild").mkdir(exist_ok=True)
        (project.home / ".guild" / "config.yml").write_text(_guild_config(cluster, key))
        write_project(project, tune_config("lr: loguniform[1e-3:1e-1]\n"))
        _run_the_users_commands(cluster)
        yield cluster
    finally:
        cluster.shutdown()


def _run_the_users_commands(cluster: SshCluster) -> None:
    project, results = cluster.project, cluster.results
    took = results.setdefault("seconds", {})  # shown by -s; asserted nowhere
    last = [time.monotonic()]

    def lap(step: str) -> None:
        now = time.monotonic()
        took[step], last[0] = round(now - last[0], 1), now

    results["lost"] = project.guild("remote", "start", "-y", "lost")
    lap("lost")
    cluster.baseline["after-lost"] = {
        h.name: set(h.pids()) == cluster.baseline[h.name] for h in cluster.members
    }
    results["start"] = project.guild("remote", "start", "-y", "crazyhorse")
    lap("start")
    token_file = project.home / ".guild" / "ray-clusters" / "crazyhorse.token"
    if token_file.exists():
        cluster.token = token_file.read_text().strip()
        results["token_mode"] = oct(token_file.stat().st_mode & 0o777)
        results["cmdlines"] = _cmdlines(cluster)
    results["status"] = project.guild("remote", "status", "crazyhorse")
    lap("status")
    cpus = _member_cpus(results["status"].stdout)
    watched = project.watch_tune("cluster=crazyhorse", "max-trials=2", f"cpus={cpus}")
    cluster.watched.append(watched)
    lap("tune")
    results["running"] = {h.name: set(h.pids()) for h in cluster.network.hosts.values()}
    results["stop"] = project.guild("remote", "stop", "-y", "crazyhorse")
    lap("stop")
    print(f"remotes-cluster steps, seconds: {took}")
    results["after"] = {h.name: set(h.pids()) for h in cluster.network.hosts.values()}


def _cmdlines(cluster: SshCluster) -> list[str]:
    """The command line of every process on every host."""
    found = []
    for host in cluster.network.hosts.values():
        for pid in host.pids():
            with contextlib.suppress(OSError):  # it ended
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode())
    return found


def _member_cpus(status: str) -> int:
    rows = [line.split() for line in status.splitlines()[2:]]
    member_rows = [row for row in rows if row[-1] == "member" and row[4] != "-"]
    return int(float(member_rows[0][4])) if member_rows else 1


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@e2e
def test_an_unreachable_member_is_one_line_and_starts_nothing(ssh_cluster):
    lost = ssh_cluster.results["lost"]
    gone = ssh_cluster.members[0].ip.rsplit(".", 1)[0] + ".99"
    assert lost.returncode != 0
    lines = [line for line in (lost.stdout + lost.stderr).splitlines() if line]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"guild: cannot reach member 'gone' ({gone}) over ssh")
    assert ssh_cluster.baseline["after-lost"] == {"m1": True, "m2": True}


@e2e
def test_start_and_status_list_the_members(ssh_cluster):
    cluster = ssh_cluster
    started = _ok(cluster.results["start"])
    here, m1, m2 = cluster.network.hosts.values()
    assert f"head here at {here.ip}:6379 (0 CPUs), members m1, m2" in started
    title, header, *rows = _ok(cluster.results["status"]).splitlines()
    assert title.startswith(f"crazyhorse: Ray cluster at {here.ip}:6379")
    assert "3 nodes up" in title
    assert header.split()[:5] == ["member", "host", "address", "status", "CPUs"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert by_name["(here)"][2] == here.ip
    assert by_name["(here)"][4] == "0"
    for host in (m1, m2):
        row = by_name[host.name]
        assert row[1:3] == [host.ip, host.ip] and row[-1] == "member"
        assert float(row[4]) >= 1 and row[6] == "0"  # CPUs; no GPUs


@e2e
def test_the_token_is_on_no_command_line_and_in_no_file_of_a_member(ssh_cluster):
    cluster = ssh_cluster
    assert cluster.token, cluster.results["start"].stdout
    assert cluster.results["token_mode"] == "0o600"
    assert [c for c in cluster.results["cmdlines"] if cluster.token in c] == []
    for host in cluster.members:
        for path in host.home.rglob("*"):
            if path.is_file():
                assert cluster.token not in path.read_text(errors="replace"), path


@e2e
def test_trials_ran_on_the_members_and_their_runs_came_home(ssh_cluster):
    cluster, project = ssh_cluster, ssh_cluster.project
    (watched,) = cluster.watched
    assert watched.returncode == 0, watched.output
    assert "2 trials on cluster=crazyhorse" in watched.output
    steps = project.runs_of("train") + project.runs_of("evaluate")
    assert len(steps) == 4
    members = {h.ip: h.name for h in cluster.members}
    for run in steps:
        assert run.status == "completed", (run.id, run.status)
        node = run.get("ray_node")
        assert node["ip"] in members and node["hostname"] == members[node["ip"]]
        assert Path(run.dir, "train.py").exists(), "source code came home"
        assert "Traceback" not in project.output(run)
    accs = [float(row["acc_val"]) for row in project.compare("-Fo", "evaluate")]
    lrs = [r.get("flags")["lr"] for r in project.runs_of("train")]
    assert sorted(accs) == pytest.approx(sorted(1 - lr for lr in lrs), abs=1e-5)


# Last: it switches the hosts off.
@e2e
def test_stop_ends_exactly_what_start_started_on_every_host(ssh_cluster):
    cluster = ssh_cluster
    stopped = _ok(cluster.results["stop"])
    assert "crazyhorse: Ray cluster stopped on this machine and its members" in stopped
    running, after = cluster.results["running"], cluster.results["after"]
    for host in cluster.members:
        assert running[host.name] > cluster.baseline[host.name], "Ray ran there"
        assert after[host.name] == cluster.baseline[host.name], host.name
        assert not list((host.home / ".guild" / "ray-clusters").glob("*.log"))
    # The user's machine: no process of the cluster is left (the namespace
    # holds nothing of ours but what the test runs).
    assert after["here"] == set(), after["here"]
    state = cluster.project.home / ".guild" / "ray-clusters"
    assert sorted(p.name for p in state.iterdir()) == []
    drivers = [p for watched in cluster.watched for p in watched.processes]

    left = cluster.shutdown()

    assert left == {}, "processes were left in the hosts' namespaces"
    assert still_running(drivers) == []
    assert {h.netns for h in cluster.network.hosts.values()}.isdisjoint(
        Network.namespaces()
    )
    assert not cluster.network.dir.exists()
