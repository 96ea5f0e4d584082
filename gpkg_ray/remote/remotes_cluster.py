"""A Ray cluster of the user's own servers: a `remotes-cluster` remote joins
Guild `ssh` remotes into one Ray cluster.

    remotes:
      pawnee-1: {type: ssh, host: pawnee-1, user: ml, venv-path: ~/envs/ml}
      pawnee-2: {type: ssh, host: pawnee-2, user: ml, venv-path: ~/envs/ml}
      crazyhorse:
        type: remotes-cluster
        remotes: [pawnee-1, pawnee-2]
        port: 6379            # the head's GCS port (default 6379)
        # address: 10.0.0.5   # this machine's address the members reach
        # max-copy-mb, env, pip, trial-cpus, trial-gpus: as for ray-cluster

The head runs on this machine with no CPUs: the driver (`guild run tune
cluster=crazyhorse`) and GUILD_HOME stay here, trials run on the members and
their runs come home through Ray, as for any ray-cluster remote.

`guild remote start` checks every member first (reachable over ssh with its
own Guild settings; Python and Ray versions equal to this machine's;
gpkg.ray importable), then starts the head here and `ray start --address`
on each member (gpkg_ray.remote.member_main, over ssh), all with token auth
and a fresh token: in a mode-600 file here, on each member only in the
environment of its Ray (it goes over ssh's stdin). Any failure ends what was
started, on every host. State is files in ~/.guild/ray-clusters: NAME.json
(the pid and start time of every process started, per host), NAME.token,
NAME.log; `guild remote stop` ends exactly those processes, on each host.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psutil

from gpkg_ray.errors import ClusterError
from gpkg_ray.files import replaced
from gpkg_ray.processes import find_processes, handles, process_tree, stop_processes
from gpkg_ray.remote import local_cluster
from gpkg_ray.remote.member_main import TEMP_PREFIX
from gpkg_ray.remote.ssh_member import Member, last_line, member_for_config

REMOTE_TYPE = "remotes-cluster"
KEYS = (
    "type",
    "description",
    "remotes",
    "port",
    "address",
    "max-copy-mb",
    "env",
    "pip",
    "trial-cpus",
    "trial-gpus",
)
PASSED_ON = ("description", "max-copy-mb", "env", "pip", "trial-cpus", "trial-gpus")
"""Keys that mean what they mean for a ray-cluster remote (remote.config)."""
DEFAULT_PORT = 6379
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
MEMBER_MAIN = "gpkg_ray.remote.member_main"

CHECK_SCRIPT = """
import json, platform
found = {"python": platform.python_version()}
try:
    import ray
    found["ray"] = ray.__version__
except Exception as e:
    found["ray_error"] = repr(e)
try:
    import importlib.metadata, gpkg_ray
    found["gpkg.ray"] = importlib.metadata.version("gpkg.ray")
except Exception as e:
    found["gpkg_ray_error"] = repr(e)
print(json.dumps(found))
"""
"""Run on a member by its `python3` (read from stdin): what it has."""


@dataclass(frozen=True)
class RemotesCluster:
    name: str
    members: tuple[Member, ...]
    port: int = DEFAULT_PORT
    address: str | None = None
    """This machine's address the members reach; None: found by route."""


def remotes_cluster(
    name: str, raw: Mapping[str, Any], remotes: Mapping[str, Any]
) -> RemotesCluster:
    """The remotes-cluster `name` from its config `raw`, its members from the
    Guild config's `remotes`; raises ClusterError naming a bad key."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ClusterError(
            f"remote '{name}': unknown key '{unknown[0]}' (a {REMOTE_TYPE} remote "
            f"takes {', '.join(KEYS)})"
        )
    names = raw.get("remotes")
    if not names or not isinstance(names, list):
        raise ClusterError(
            f"remote '{name}': remotes must list its members, Guild ssh remotes, "
            "e.g. `remotes: [pawnee-1, pawnee-2]`"
        )
    if len(set(map(str, names))) != len(names):
        raise ClusterError(f"remote '{name}': a member is listed twice in remotes")
    members = tuple(member_for_config(name, str(n), remotes.get(str(n))) for n in names)
    port = raw.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ClusterError(f"remote '{name}': port must be 1-65535, not '{port}'")
    address = raw.get("address")
    if address is not None and (not isinstance(address, str) or ":" in address):
        raise ClusterError(
            f"remote '{name}': address is this machine's address the members "
            f"reach (no port: that is `port`), e.g. `address: 10.0.0.5`, not "
            f"'{address}'"
        )
    return RemotesCluster(name, members, port, address)


def cluster_config_raw(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """What a tune needs of the started cluster, as a ray-cluster remote's
    config (remote.config.cluster_config reads it): the head's address and
    token, and the keys both types share. ClusterError when not started."""
    state = _read_state(name)
    if state is None:
        raise ClusterError(
            f"cluster '{name}' is not started: start it with "
            f"`guild remote start {name}`"
        )
    config = {key: raw[key] for key in PASSED_ON if key in raw}
    return {
        **config,
        "address": state["address"],
        "auth-token-file": local_cluster.token_file(name),
    }


# --- start -----------------------------------------------------------------


def start(cluster: RemotesCluster, out: Callable[[str], None]) -> str:
    """Checks the members, starts the head here and Ray on each member;
    returns the head's address. Raises ClusterError (one line) with nothing
    left running when any of it fails."""
    state = _read_state(cluster.name)
    if state is not None:
        if _head(state) is not None:
            raise ClusterError(
                f"cluster '{cluster.name}' is already running (head at "
                f"{state['address']}): stop it with `guild remote stop {cluster.name}`"
            )
        _stop_state(cluster, state, out)  # what a killed head left
    _parallel(cluster.members, check_member)
    head_ip = cluster.address or route_address(cluster.members[0].host)
    token = _new_token(cluster.name)
    state = _start_head(cluster, head_ip, token)
    try:
        started, errors = _each(
            cluster.members, lambda m: _start_member(m, cluster.name, state, token)
        )
        state["members"] = started  # recorded first: a failure ends them
        _write_state(cluster.name, state)
        if errors:
            raise errors[0]
        _wait_nodes(cluster, state)
    except BaseException:
        _stop_state(cluster, _read_state(cluster.name) or state, out=None)
        _remove_files(cluster.name)
        raise
    return state["address"]


def check_member(member: Member) -> dict[str, str]:
    """What the member has; ClusterError (one line naming the member and
    both versions) when it cannot run this machine's Ray cluster."""
    done = member.run(["python3", "-"], stdin=CHECK_SCRIPT, timeout=60)
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ClusterError(
            f"member '{member.name}' ({member.target}): its python3 did not run "
            f"(exit {done.returncode}: {last_line(done.stderr)}): check its "
            "venv-path, conda-env or venv-activate"
        ) from None
    problem = version_problem(found, here())
    if problem:
        raise ClusterError(f"member '{member.name}' ({member.target}): {problem}")
    return found


def here() -> dict[str, str]:
    import importlib.metadata
    import platform

    import ray

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "gpkg.ray": importlib.metadata.version("gpkg.ray"),
    }


def version_problem(found: Mapping[str, str], mine: Mapping[str, str]) -> str | None:
    """Why a member with `found` cannot join this machine's cluster, or None."""
    for what, label in (("python", "Python"), ("ray", "Ray"), ("gpkg.ray", "gpkg.ray")):
        if what not in found:
            error = found.get(what.replace(".", "_") + "_error", "not found")
            return (
                f"{label} is not importable there ({error}), {label} {mine[what]} "
                "here: install it in the member's Python environment"
            )
        if found[what] != mine[what]:
            return (
                f"{label} {found[what]} there, {label} {mine[what]} here: "
                "Ray needs the same versions on every host"
            )
    return None


def route_address(host: str) -> str:
    """This machine's address on the route to `host` (no packet is sent)."""
    try:
        ip = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((ip, 9))
            return s.getsockname()[0]
    except OSError as e:
        raise ClusterError(
            f"no route from here to {host} ({e.strerror or e}): set the "
            "cluster's `address` to this machine's address the members reach"
        ) from e


def _start_head(cluster: RemotesCluster, ip: str, token: str) -> dict:
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    os.makedirs(os.path.join(temp_dir, "ray"))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_TMPDIR": temp_dir,  # ray_current_cluster there, not in /tmp/ray
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for name in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(name, None)  # members reach the head at its real address
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
            f"--node-ip-address={ip}", f"--port={cluster.port}", "--num-cpus=0",
            "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp_dir}",
            "--disable-usage-stats", "--block"]  # fmt: skip
    log_path = _log_file(cluster.name)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it outlives this command
        )
    me = psutil.Process(proc.pid)
    state = {
        "kind": REMOTE_TYPE,
        "address": f"{ip}:{cluster.port}",
        "head": {"pid": proc.pid, "created": me.create_time(), "temp_dir": temp_dir},
        "members": {},
    }
    _write_state(cluster.name, state)
    deadline = time.monotonic() + START_TIMEOUT
    while "Ray runtime started." not in _read(log_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_state(cluster, state, out=None)
            _remove_files(cluster.name)
            raise ClusterError(
                f"the head of '{cluster.name}' did not start at {ip}:{cluster.port}: "
                f"{last_line(_read(log_path))} (see {log_path})"
            )
        time.sleep(0.2)
    state["head"]["processes"] = handles(me.children(recursive=True))
    _write_state(cluster.name, state)
    return state


def _start_member(member: Member, name: str, state: dict, token: str) -> dict:
    request = {
        "cluster": name,
        "head": state["address"],
        "token": token,
        "head_temp_dir": state["head"]["temp_dir"],
    }
    reply = _member_call(member, "start", request, START_TIMEOUT + 30)
    return {**reply, "host": member.host}


def _member_call(member: Member, command: str, request: dict, timeout: float) -> dict:
    done = member.run(
        ["python3", "-m", MEMBER_MAIN, command],
        stdin=json.dumps(request),
        timeout=timeout,
    )
    try:
        reply = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        reply = {"error": f"exit {done.returncode}: {last_line(done.stderr)}"}
    if "error" in reply:
        raise ClusterError(
            f"member '{member.name}' ({member.target}): {command} failed: "
            f"{reply['error']}"
        )
    return reply


def _wait_nodes(cluster: RemotesCluster, state: dict) -> None:
    """Until the head sees every member's node alive."""
    from gpkg_ray.remote.status import cluster_nodes

    config = _ray_cluster_config(cluster.name, state)
    wanted = {m["ip"] for m in state["members"].values()}
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        alive = {n.address for n in cluster_nodes(config) if n.alive}
        if wanted <= alive:
            return
        if time.monotonic() > deadline:
            missing = sorted(wanted - alive)
            raise ClusterError(
                f"cluster '{cluster.name}': the head does not see the nodes at "
                f"{', '.join(missing)} after {START_TIMEOUT:g} s"
            )
        time.sleep(0.5)


def _ray_cluster_config(name: str, state: dict):
    from gpkg_ray.remote.config import cluster_config

    return cluster_config(
        name,
        {
            "address": state["address"],
            "auth-token-file": local_cluster.token_file(name),
        },
    )


# --- status ----------------------------------------------------------------


def status_lines(cluster: RemotesCluster) -> list[str]:
    """A header, then one row per host: the head here and each member, with
    CPUs and GPUs total and free. ClusterDown when it is not started."""
    from gpkg_ray.remote.status import ClusterDown, cluster_nodes

    state = _read_state(cluster.name)
    if state is None:
        raise ClusterDown(f"not started: `guild remote start {cluster.name}`")
    nodes = {
        n.address: n
        for n in cluster_nodes(_ray_cluster_config(cluster.name, state))
        if n.alive
    }
    head_ip = state["address"].rpartition(":")[0]
    hosts = [("(here)", "-", head_ip, "head")]
    for member in cluster.members:
        ip = (state["members"].get(member.name) or {}).get("ip", "-")
        hosts.append((member.name, member.host, ip, "member"))
    rows = [
        ["member", "host", "address", "status", "CPUs", "free", "GPUs", "free", "role"]
    ]
    cpus = free = 0.0
    for name, host, ip, role in hosts:
        node = nodes.get(ip)
        if node is None:
            rows.append([name, host, ip, "down", "-", "-", "-", "-", role])
            continue
        (cpu, cpu_free), (gpu, gpu_free) = node.amount("CPU"), node.amount("GPU")
        cpus, free = cpus + cpu, free + cpu_free
        rows.append([name, host, ip, node.status.lower(), f"{cpu:g}", f"{cpu_free:g}",
                     f"{gpu:g}", f"{gpu_free:g}", role])  # fmt: skip
    up = sum(1 for row in rows[1:] if row[3] != "down")
    title = (
        f"{cluster.name}: Ray cluster at {state['address']} (head here, "
        f"{len(cluster.members)} members), {up} nodes up, {free:g}/{cpus:g} CPUs free"
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [title] + [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


# --- stop ------------------------------------------------------------------


def stop(cluster: RemotesCluster, out: Callable[[str], None]) -> bool:
    """Ends what start started, on each host; False if it was not started."""
    state = _read_state(cluster.name)
    if state is None:
        _remove_files(cluster.name, with_log=True)
        return False
    _stop_state(cluster, state, out)
    _remove_files(cluster.name, with_log=True)
    return True


def _stop_state(
    cluster: RemotesCluster, state: dict, out: Callable[[str], None] | None
) -> None:
    """Ends the recorded processes: the members' first (over ssh), then the
    head's here. A member that cannot be reached is named in one line."""
    by_name = {m.name: m for m in cluster.members}

    def stop_member(name: str) -> None:
        recorded = state["members"][name]
        member = by_name.get(name)
        if member is None:  # no longer in the config: reached as recorded
            member = Member(name, recorded["host"])
        try:
            _member_call(member, "stop", recorded, STOP_TIMEOUT + 30)
        except ClusterError as e:
            if out is not None:
                out(f"{e} (its Ray, pid {recorded['pid']}, may still run there)")

    with ThreadPoolExecutor(max_workers=max(1, len(state["members"]))) as pool:
        list(pool.map(stop_member, list(state["members"])))
    _stop_head(state)


def _stop_head(state: dict) -> None:
    head = _head(state)
    recorded = find_processes(state["head"].get("processes") or [])
    everything = {
        p.pid: p
        for proc in ([head] if head else []) + recorded
        for p in process_tree(proc)
    }
    # All at once, SIGKILL after a grace (see member_main._end).
    stop_processes(list(everything.values()))
    temp_dir = state["head"].get("temp_dir")
    if temp_dir and os.path.basename(temp_dir).startswith(TEMP_PREFIX):
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


def _head(state: dict) -> psutil.Process | None:
    head = state["head"]
    found = find_processes([[head["pid"], head["created"]]])
    return found[0] if found else None


# --- files -----------------------------------------------------------------


def _state_file(name: str) -> str:
    return os.path.join(local_cluster.state_dir(), f"{name}.json")


def _log_file(name: str) -> str:
    return os.path.join(local_cluster.state_dir(), f"{name}.log")


def _new_token(name: str) -> str:
    os.makedirs(local_cluster.state_dir(), mode=0o700, exist_ok=True)
    token = secrets.token_hex(32)
    path = local_cluster.token_file(name)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # O_CREAT keeps an old file's mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _write_state(name: str, state: dict) -> None:
    os.makedirs(local_cluster.state_dir(), mode=0o700, exist_ok=True)
    with replaced(_state_file(name)) as f:
        json.dump(state, f)


def _read_state(name: str) -> dict | None:
    try:
        with open(_state_file(name)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("kind") != REMOTE_TYPE:
        return None
    return state


def _remove_files(name: str, with_log: bool = False) -> None:
    paths = [_state_file(name), local_cluster.token_file(name)]
    if with_log:
        paths.append(_log_file(name))
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _each(
    members: tuple[Member, ...], call: Callable[[Member], Any]
) -> tuple[dict[str, Any], list[ClusterError]]:
    """`call` on every member at once: {name: result} of those that
    succeeded, and the errors of the others (in the order of `remotes`)."""
    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        futures = {m.name: pool.submit(call, m) for m in members}
    results, errors = {}, []
    for name, future in futures.items():
        try:
            results[name] = future.result()
        except ClusterError as e:
            errors.append(e)
    return results, errors


def _parallel(members: tuple[Member, ...], call: Callable[[Member], Any]) -> dict:
    """`call` on every member at once; {name: result}. The first member's
    error (in the order of `remotes`) is raised after all have answered."""
    results, errors = _each(members, call)
    if errors:
        raise errors[0]
    return results
