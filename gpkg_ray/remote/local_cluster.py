"""Clusters the remote's config describes as local: `guild remote start|stop`.

    remotes:
      lab:
        type: ray-cluster
        address: 127.0.0.1:6390   # where its head listens (loopback only)
        local:
          workers: 2              # worker nodes on this machine
          cpus: 2                 # CPUs of each worker
          gpus: 0                 # GPUs of each worker
          head-cpus: 0            # the head runs no trials by default

`guild remote start lab` runs `local_cluster_main` detached; it keeps the
cluster until `guild remote stop lab`. State is files, per remote, in
~/.guild/ray-clusters: `NAME.json` (address, temp dir, and the pid and start
time of each of its processes), `NAME.token` (the cluster's auth token,
readable by its owner only; the remote uses it without an auth-token key) and
`NAME.log`. Stopping ends exactly the processes recorded there (and what they
started), and removes the three files.

The state file outlives its processes when they are killed or the machine
restarts, and their pids go to other programs: a recorded process counts only
while its pid still has the recorded start time. A start that finds a state
file whose cluster is gone clears it (ending what is left of that cluster)
before it starts a new one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import psutil

from gpkg_ray.errors import ClusterError
from gpkg_ray.processes import find_processes, process_tree, stop_processes
from gpkg_ray.remote.keys import check_mapping

START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
MAIN_MODULE = "gpkg_ray.remote.local_cluster_main"
TEMP_PREFIX = "gpkg-ray-cluster-"
"""Prefix of a local cluster's temp dir (local_cluster_main makes it)."""


@dataclass(frozen=True)
class LocalSpec:
    workers: int = 1
    cpus: float = 1
    gpus: float = 0
    head_cpus: float = 0


LOCAL_KEYS = ("workers", "cpus", "gpus", "head-cpus")


def local_spec(name: str, raw) -> LocalSpec:
    """The `local` key of remote `name`; raises ClusterError when it is bad."""
    check_mapping(name, "local", raw, LOCAL_KEYS)
    values = {key.replace("-", "_"): raw[key] for key in raw}
    for key, value in values.items():
        minimum = 1 if key == "workers" else 0
        numeric = not isinstance(value, bool) and isinstance(value, int | float)
        # YAML reads `.inf` and `.nan` as floats: neither is a count.
        if not numeric or not math.isfinite(value):
            value = None
        if value is None or value < minimum or (key == "workers" and value % 1):
            raise ClusterError(
                f"remote '{name}': local: {key.replace('_', '-')} must be a "
                f"finite number >= {minimum}, not '{raw[key.replace('_', '-')]}'"
            )
    return LocalSpec(**values)


def state_dir() -> str:
    # Not Guild's user_config_home(): that is the project dir when the config
    # is ./guild-config.yml, and the project's files go to every run.
    return os.path.join(os.path.expanduser("~"), ".guild", "ray-clusters")


def token_file(name: str) -> str:
    return os.path.join(state_dir(), f"{name}.token")


def _state_file(name: str) -> str:
    return os.path.join(state_dir(), f"{name}.json")


def _log_file(name: str) -> str:
    return os.path.join(state_dir(), f"{name}.log")


def start(name: str, port: int, spec: LocalSpec) -> str:
    """Starts the cluster; returns its address. Raises ClusterError."""
    state = _read_state(name)
    if state is not None:
        running = _supervisor(state)
        if running is not None:
            raise ClusterError(
                f"cluster '{name}' is already running (pid {running.pid}, at "
                f"{state['address']}): stop it with `guild remote stop {name}`"
            )
        # Its supervisor is gone (killed, or the machine restarted): what is
        # left of that cluster would hold its port.
        _end_cluster(state)
    _remove_files(name)
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    token = _new_token_file(name)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    with open(_log_file(name), "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                MAIN_MODULE,
                _state_file(name),
                _spec_json(port, spec),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # It outlives this command: `guild remote stop` ends it by handle.
            start_new_session=True,
        )
    return _wait_started(name, proc)


def _spec_json(port: int, spec: LocalSpec) -> str:
    return json.dumps({"port": port, **asdict(spec)})


def _new_token_file(name: str) -> str:
    token = secrets.token_hex(32)
    path = token_file(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _wait_started(name: str, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = _read_state(name)
        # The state its supervisor wrote, not one left by another start.
        if state is not None and state.get("pid") == proc.pid:
            return state["address"]
        if proc.poll() is not None:
            _remove_files(name)
            raise ClusterError(
                f"cluster '{name}' did not start: {_last_log_line(name)} "
                f"(see {_log_file(name)})"
            )
        time.sleep(0.2)
    stop_processes(process_tree(proc.pid))
    _remove_files(name)
    raise ClusterError(
        f"cluster '{name}' did not start in {START_TIMEOUT:g} s (see {_log_file(name)})"
    )


def stop(name: str) -> bool:
    """Stops the cluster's processes, by handle; False if it was not running."""
    state = _read_state(name)
    if state is None:
        _remove_files(name, with_log=True)
        return False
    _end_cluster(state)
    _remove_files(name, with_log=True)
    return True


def _end_cluster(state: dict) -> None:
    """Ends the processes of the cluster `state` describes that still run (its
    supervisor first: it shuts the cluster down), with what they started, and
    removes its temp dir."""
    supervisor = _supervisor(state)
    recorded = find_processes(state.get("processes") or [], state["written"])
    # Their workers (and what those started) are ended with them. psutil's
    # handles do not signal a pid that another process has taken since.
    supervisors = [supervisor] if supervisor is not None else []
    everything = [p for proc in supervisors + recorded for p in process_tree(proc)]
    for proc in supervisors:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()  # it shuts the cluster down, then exits
    psutil.wait_procs(supervisors, timeout=STOP_TIMEOUT)
    stop_processes(everything)
    _remove_temp_dir(state.get("temp_dir"))


def _supervisor(state: dict) -> psutil.Process | None:
    """The cluster's local_cluster_main process, if it still runs."""
    # A state file written before start times were recorded has a bare pid.
    entry = [state["pid"], state["created"]] if "created" in state else state["pid"]
    found = find_processes([entry], state["written"])
    return found[0] if found else None


def _remove_temp_dir(path: str | None) -> None:
    # Only a dir of the shape local_cluster_main makes: the file could be edited.
    if path and os.path.basename(path).startswith(TEMP_PREFIX):
        shutil.rmtree(path, ignore_errors=True)


def _read_state(name: str) -> dict | None:
    """The state file, with `written`: when it was (a process that started
    later is none of the cluster's)."""
    path = _state_file(name)
    try:
        with open(path) as f:
            state = json.load(f)
        state["written"] = os.stat(path).st_mtime
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(state.get("pid"), int) or "address" not in state:
        return None
    return state


def _remove_files(name: str, with_log: bool = False) -> None:
    """The cluster's state files; its log too when it is stopped (a start
    that failed keeps it: its error says to read it)."""
    paths = [_state_file(name), token_file(name)]
    if with_log:
        paths.append(_log_file(name))
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _last_log_line(name: str) -> str:
    try:
        with open(_log_file(name)) as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else "no output"
