"""A `ray-cluster` remote whose nodes are a SLURM allocation: `guild remote
start|status|stop` on a login node.

    remotes:
      hpc:
        type: ray-cluster
        slurm:
          partition: gpu          # sbatch --partition (default: SLURM's)
          nodes: 2                # sbatch --nodes, one Ray node on each
          cpus-per-node: 32       # --cpus-per-task of the node's one task
          gpus-per-node: 4        # --gpus-per-task
          time: "4:00:00"         # --time, SLURM's form
          port: 6379              # the head's GCS port
          python: ~/envs/ml/bin/python  # on the nodes (default: this one)
          sbatch: [--account=ml, --qos=normal]  # any other sbatch options
          stop-before: 120        # s before the time limit a tune stops its trials

The job is the one Ray documents for SLURM (`job_script`): on its first node
it starts the head (`ray start --head --block`, which runs trials too), and
`srun`s `ray start --address=HEAD --block` on each other node; it holds the
allocation until it is cancelled or reaches its time limit. The head's
address is the first node's, as the login node resolves its name.

`guild remote start` submits it with a fresh token (Ray's token auth) in
sbatch's environment, which SLURM keeps for the job readable by its owner and
admins only (never on a command line), and in ~/.guild/ray-clusters/NAME.token
(mode 0600); it waits, showing the job id and queue state, until every node
has joined. The tune's driver and GUILD_HOME stay on the login node: a driver
needs a Ray node on its own host, so when the head is on another host, start
also runs a node with no CPUs here (`ray start --address --block`, recorded
by pid and start time). State: ~/.guild/ray-clusters/NAME.json (job id,
address, that node's process); the job's output: NAME-JOBID.log there (give
`output:` when the nodes do not share this home).

`guild remote stop` cancels the job (scancel) and ends the node it started
here. `status` reads the job from squeue: state, time left, nodes; a job that
ended is reported with SLURM's reason (TIMEOUT: its time limit).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from gpkg_ray.errors import ClusterError
from gpkg_ray.files import replaced
from gpkg_ray.processes import find_processes, handles, process_tree, stop_processes
from gpkg_ray.remote.keys import check_mapping

SLURM_KEYS = (
    "partition",
    "nodes",
    "cpus-per-node",
    "gpus-per-node",
    "time",
    "port",
    "python",
    "output",
    "sbatch",
    "stop-before",
)
DEFAULT_PORT = 6379
DEFAULT_STOP_BEFORE = 120
"""Seconds before the job's time limit at which a tune on it stops its
trials: after the limit Ray is gone, and the runs with it."""
START_TIMEOUT = 600.0
"""How long start waits for the job to run and its nodes to join; a job that
is still queued then stays queued (status shows it)."""
COMMAND_TIMEOUT = 30.0
TIME_RE = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^\d+-\d+$")
ENDED = {
    "TIMEOUT": "reached its time limit",
    "CANCELLED": "was cancelled",
    "COMPLETED": "ended",
    "FAILED": "failed",
    "NODE_FAIL": "lost a node",
    "PREEMPTED": "was preempted",
    "OUT_OF_MEMORY": "ran out of memory",
    "BOOT_FAIL": "could not boot its nodes",
    "DEADLINE": "reached its deadline",
}
"""SLURM's final job states, and what they mean for the cluster."""


@dataclass(frozen=True)
class SlurmSpec:
    partition: str | None = None
    nodes: int = 1
    cpus_per_node: int | None = None
    gpus_per_node: int = 0
    time: str | None = None
    port: int = DEFAULT_PORT
    python: str | None = None
    output: str | None = None
    sbatch: tuple[str, ...] = field(default=())
    stop_before: int = DEFAULT_STOP_BEFORE


def slurm_spec(name: str, raw: Any) -> SlurmSpec:
    """The `slurm` key of remote `name`; raises ClusterError when it is bad."""
    check_mapping(name, "slurm", raw, SLURM_KEYS)
    values: dict[str, Any] = {}
    for key, minimum in (
        ("nodes", 1),
        ("cpus-per-node", 1),
        ("gpus-per-node", 0),
        ("port", 1),
        ("stop-before", 0),
    ):
        if raw.get(key) is not None:
            values[key.replace("-", "_")] = _count(name, key, raw[key], minimum)
    if values.get("port", DEFAULT_PORT) > 65535:
        raise ClusterError(f"remote '{name}': slurm: port must be <= 65535")
    for key in ("partition", "python", "output"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], str) or not raw[key].strip():
                raise ClusterError(f"remote '{name}': slurm: {key} must be a string")
            values[key] = raw[key].strip()
    for key in ("python", "output"):
        if key in values:
            values[key] = os.path.expanduser(values[key])
    if raw.get("time") is not None:
        values["time"] = _time(name, raw["time"])
    if raw.get("sbatch") is not None:
        values["sbatch"] = _sbatch_options(name, raw["sbatch"])
    return SlurmSpec(**values)


def _count(name: str, key: str, value: Any, minimum: int) -> int:
    numeric = not isinstance(value, bool) and isinstance(value, int | float)
    if not numeric or not math.isfinite(value) or value % 1 or value < minimum:
        raise ClusterError(
            f"remote '{name}': slurm: {key} must be a whole number >= {minimum}, "
            f"not '{value}'"
        )
    return int(value)


def _time(name: str, value: Any) -> str:
    # YAML reads an unquoted 1:00:00 as a base-60 int (3600): minutes for
    # SLURM would be wrong, so only a string or a plain minute count.
    text = str(value).strip()
    if isinstance(value, bool) or not TIME_RE.match(text):
        raise ClusterError(
            f"remote '{name}': slurm: time must be SLURM's time limit, e.g. "
            f'"4:00:00" or "1-12:00:00" (quoted), not \'{value}\''
        )
    return text


def _sbatch_options(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(o, str) and o.startswith("-") for o in value
    ):
        raise ClusterError(
            f"remote '{name}': slurm: sbatch must be a list of sbatch options, "
            "e.g. `sbatch: [--account=ml, --qos=normal]`"
        )
    return tuple(value)


# --- the job ---------------------------------------------------------------


def ray_command(spec: SlurmSpec) -> str:
    """The `ray` CLI the nodes run: next to the nodes' Python (`python:`, or
    this one: a shared home or software tree has it at the same path)."""
    python = spec.python or sys.executable
    return os.path.join(os.path.dirname(python), "ray")


def job_script(name: str, spec: SlurmSpec) -> str:
    """The batch script: Ray's SLURM recipe, one Ray node per SLURM node."""
    directives = [f"--job-name=gpkg-ray-{name}", f"--nodes={spec.nodes}"]
    directives += ["--ntasks-per-node=1", f"--output={output_file(name, spec)}"]
    if spec.partition:
        directives.append(f"--partition={spec.partition}")
    if spec.cpus_per_node:
        directives.append(f"--cpus-per-task={spec.cpus_per_node}")
    if spec.gpus_per_node:
        directives.append(f"--gpus-per-task={spec.gpus_per_node}")
    if spec.time:
        directives.append(f"--time={spec.time}")
    directives += list(spec.sbatch)
    ray = shlex.quote(ray_command(spec))
    resources = f"--num-gpus={spec.gpus_per_node}"
    if spec.cpus_per_node:
        resources += f" --num-cpus={spec.cpus_per_node}"
    lines = ["#!/bin/bash"] + [f"#SBATCH {d}" for d in directives]
    lines += _SCRIPT.format(ray=ray, port=spec.port, resources=resources).splitlines()
    return "\n".join(lines) + "\n"


_SCRIPT = """\
# Written by gpkg.ray (`guild remote start`). Ray's token is in the
# environment sbatch gave the job (RAY_AUTH_MODE, RAY_AUTH_TOKEN).
set -u
nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${{nodes[0]}}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address)
head_ip=${{head_ip%% *}}
case $head_ip in
  # A one-host test cluster: keep every Ray listener on loopback.
  127.*) export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ;;
esac
export RAY_USAGE_STATS_ENABLED=0
# SIGTERM (cancel, time limit) stops Ray at once: no Serve to drain, and
# SLURM's KillWait is short.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
# Ray's sockets and logs: a short dir of the job's own on each node, removed
# when its Ray stops (SLURM sends SIGTERM at cancel and at the time limit).
export GPKG_RAY_TEMP_DIR=/tmp/gpkg-ray-slurm-$SLURM_JOB_ID
node_ray() {{
  srun --nodes=1 --ntasks=1 -w "$1" bash -c '
    "$@" --temp-dir="$GPKG_RAY_TEMP_DIR" & ray=$!
    trap "kill -TERM $ray" TERM
    wait $ray; wait $ray; rm -rf "$GPKG_RAY_TEMP_DIR"' node_ray "${{@:2}}" &
}}
echo "gpkg.ray: head $head at $head_ip:{port}"
node_ray "$head" {ray} start --head --block --node-ip-address="$head_ip" \\
  --port={port} --include-dashboard=false {resources}
for node in "${{nodes[@]:1}}"; do
  sleep 5
  node_ray "$node" {ray} start --block --address="$head_ip:{port}" {resources}
done
wait
"""


def output_file(name: str, spec: SlurmSpec) -> str:
    return spec.output or os.path.join(state_dir(), f"{name}-%j.log")


# --- SLURM's commands --------------------------------------------------------


def _slurm(*command: str, env: Mapping[str, str] | None = None, stdin: str = "") -> str:
    """Runs a SLURM command; its stdout. Raises ClusterError with its error."""
    try:
        done = subprocess.run(
            command,
            input=stdin,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
    except FileNotFoundError as e:
        raise ClusterError(
            f"{command[0]} not found: run `guild remote` for a slurm remote on a "
            "login node of the SLURM cluster"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise ClusterError(
            f"{command[0]} did not answer in {COMMAND_TIMEOUT:g} s"
        ) from e
    if done.returncode != 0:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ClusterError(f"{command[0]} failed: {error}")
    return done.stdout


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    """SLURM's job state: PENDING, RUNNING, TIMEOUT, ...; GONE when SLURM no
    longer knows the job."""
    time_left: str = ""
    nodes: tuple[str, ...] = ()
    reason: str = ""
    time_limit: str = ""

    @property
    def seconds_left(self) -> float | None:
        """squeue's time left ([D-]H:MM:SS, M:SS) in seconds; None when the
        job has no limit."""
        days, _, clock = self.time_left.rpartition("-")
        parts = clock.split(":")
        if not all(p.isdigit() for p in parts) or (days and not days.isdigit()):
            return None
        seconds = 0
        for part in parts:
            seconds = seconds * 60 + int(part)
        return seconds + int(days or 0) * 86400

    @property
    def ended(self) -> bool:
        return self.state in ENDED or self.state in ("GONE", "COMPLETING")

    def describe(self) -> str:
        """One phrase: the job and what it is doing, or how it ended."""
        job = f"SLURM job {self.job_id}"
        if self.state == "RUNNING":
            return (
                f"{job} running on {','.join(self.nodes)}, time left "
                f"{self.time_left or 'unknown'}"
            )
        if self.state == "PENDING":
            return f"{job} pending ({self.reason or 'queued'})"
        if self.state == "TIMEOUT":
            limit = f" ({self.time_limit})" if self.time_limit else ""
            return f"{job} ended: TIMEOUT, it reached its time limit{limit}"
        if self.state in ENDED:
            return f"{job} ended: {self.state}, it {ENDED[self.state]}"
        if self.state == "GONE":
            return f"{job} ended (SLURM no longer lists it)"
        return f"{job} {self.state.lower()}"


def job_state(job_id: str) -> JobState:
    """The job as squeue shows it (SLURM keeps an ended job there for a few
    minutes: MinJobAge), else as sacct does, else GONE."""
    try:
        out = _slurm("squeue", "-h", "-j", job_id, "-t", "all", "-o", "%T|%L|%N|%r|%l")
    except ClusterError as e:
        if "Invalid job id" not in str(e):
            raise
        out = ""
    line = out.strip().splitlines()[0] if out.strip() else ""
    if line:
        state, left, nodelist, reason, limit = (line.split("|") + [""] * 5)[:5]
        if state.strip() == "COMPLETING" and reason.strip() == "TimeLimit":
            state = "TIMEOUT"  # its processes are being ended
        return JobState(
            job_id,
            state.strip(),
            left.strip(),
            hostnames(nodelist.strip()),
            "" if reason.strip() == "None" else reason.strip(),
            limit.strip(),
        )
    return _sacct_state(job_id)


def _sacct_state(job_id: str) -> JobState:
    with contextlib.suppress(ClusterError):
        out = _slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,Timelimit")
        if out.strip():
            state, _, limit = out.strip().splitlines()[0].partition("|")
            # "CANCELLED by 0": the state is the first word.
            return JobState(job_id, state.split()[0], time_limit=limit)
    return JobState(job_id, "GONE")


def hostnames(nodelist: str) -> tuple[str, ...]:
    if not nodelist or nodelist.startswith("("):
        return ()
    out = _slurm("scontrol", "show", "hostnames", nodelist)
    return tuple(out.split())


# --- start, stop --------------------------------------------------------------


def state_dir() -> str:
    from gpkg_ray.remote.local_cluster import state_dir as clusters_dir

    return clusters_dir()


def _state_file(name: str) -> str:
    return os.path.join(state_dir(), f"{name}.json")


def token_file(name: str) -> str:
    from gpkg_ray.remote.local_cluster import token_file as cluster_token_file

    return cluster_token_file(name)


def read_state(name: str) -> dict | None:
    """What start recorded: job id, and address once the head is up."""
    path = _state_file(name)
    try:
        with open(path) as f:
            state = json.load(f)
        state["written"] = os.stat(path).st_mtime
    except (OSError, ValueError, TypeError):
        return None
    return state if isinstance(state.get("job"), str) else None


def _write_state(name: str, state: dict) -> None:
    with replaced(_state_file(name)) as f:
        json.dump({k: v for k, v in state.items() if k != "written"}, f)


def start(
    name: str, spec: SlurmSpec, out: Callable[[str], None] = print
) -> tuple[JobState, str]:
    """Submits the job, waits until all its nodes have joined; (the job, the
    head's address). Raises ClusterError (the job is cancelled then)."""
    state = read_state(name)
    if state is not None:
        current = job_state(state["job"])
        if not current.ended:
            raise ClusterError(
                f"cluster '{name}' is already up or queued ({current.describe()}): "
                f"stop it with `guild remote stop {name}`"
            )
        _end_login_node(state)
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    token = _new_token_file(name)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    reply = _slurm("sbatch", "--parsable", env=env, stdin=job_script(name, spec))
    job_id = reply.strip().split(";")[0]
    state = {"job": job_id, "port": spec.port}
    _write_state(name, state)
    out(f"{name}: submitted SLURM job {job_id}")
    try:
        job, host = _wait_running(name, job_id, spec, out)
        state["host"] = host
        _write_state(name, state)
        if not is_this_host(host):
            state["login_node"] = _start_login_node(name, host, spec.port, token)
            _write_state(name, state)
        _wait_nodes(name, job_id, host, spec, out)
    except BaseException:
        cancel(name)
        raise
    return job, f"{host}:{spec.port}"


def _new_token_file(name: str) -> str:
    token = secrets.token_hex(32)
    fd = os.open(token_file(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _wait_running(
    name: str, job_id: str, spec: SlurmSpec, out: Callable[[str], None]
) -> tuple[JobState, str]:
    """Waits until the job runs; (its state, the head's address)."""
    deadline = time.monotonic() + START_TIMEOUT
    shown = ""
    while time.monotonic() < deadline:
        job = job_state(job_id)
        if job.describe() != shown and job.state != "RUNNING":
            shown = job.describe()
            out(f"{name}: {shown}")
        if job.ended:
            raise ClusterError(
                f"cluster '{name}': {job.describe()} before Ray started "
                f"(see {output_file(name, spec).replace('%j', job_id)})"
            )
        if job.state == "RUNNING" and job.nodes:
            return job, _resolve(job.nodes[0])
        time.sleep(1.0)
    raise ClusterError(
        f"cluster '{name}': SLURM job {job_id} did not start in "
        f"{START_TIMEOUT:g} s ({shown}); it was cancelled"
    )


def _resolve(node: str) -> str:
    try:
        return socket.gethostbyname(node)
    except OSError as e:
        raise ClusterError(f"cannot resolve the head node {node}: {e}") from e


def is_this_host(address: str) -> bool:
    """Whether `address` is one of this machine's: then the head's raylet is
    the driver's."""
    if address.startswith("127.") or address == "::1":
        return True
    ours = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    return address in ours


def _wait_nodes(
    name: str,
    job_id: str,
    host: str,
    spec: SlurmSpec,
    out: Callable[[str], None],
) -> None:
    """Waits until the head answers with all the job's nodes joined."""
    from gpkg_ray.remote.config import ClusterConfig
    from gpkg_ray.remote.status import ClusterDown, cluster_nodes

    expected = spec.nodes + (0 if is_this_host(host) else 1)
    cluster = ClusterConfig(name, host, spec.port, slurm=spec)
    deadline = time.monotonic() + START_TIMEOUT
    seen = -1
    while time.monotonic() < deadline:
        job = job_state(job_id)
        if job.ended:
            raise ClusterError(f"cluster '{name}': {job.describe()}")
        with contextlib.suppress(ClusterDown):
            alive = [n for n in cluster_nodes(cluster) if n.alive]
            if len(alive) != seen:
                seen = len(alive)
                out(f"{name}: Ray up at {host}:{spec.port}, {seen}/{expected} nodes")
            if seen >= expected:
                return
        time.sleep(1.0)
    raise ClusterError(
        f"cluster '{name}': its nodes did not all join in {START_TIMEOUT:g} s; "
        "the job was cancelled"
    )


def _start_login_node(name: str, host: str, port: int, token: str) -> list:
    """A Ray node with no CPUs on this host, for the tune's driver; its
    [pid, start time]."""
    with open(os.path.join(state_dir(), f"{name}-login-node.log"), "w") as log:
        proc = subprocess.Popen(
            [
                ray_command(SlurmSpec()),
                "start",
                "--block",
                f"--address={host}:{port}",
                "--num-cpus=0",
                "--num-gpus=0",
            ],
            env={
                **os.environ,
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": token,
                "RAY_USAGE_STATS_ENABLED": "0",
            },
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it outlives this command
        )
    return handles([psutil.Process(proc.pid)])[0]


def _end_login_node(state: dict) -> None:
    entry = state.get("login_node")
    if not entry:
        return
    found = find_processes([entry], state.get("written"))
    everything = [p for proc in found for p in process_tree(proc)]
    for proc in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()  # `ray start --block` stops what it started
    psutil.wait_procs(found, timeout=30)
    stop_processes(everything)


def cancel(name: str) -> JobState | None:
    """Cancels the job and ends the login node's Ray; the job as it was
    before, or None when none was started."""
    state = read_state(name)
    if state is None:
        return None
    job = job_state(state["job"])
    if not job.ended:
        _slurm("scancel", state["job"])
        _wait_ended(state["job"])
    _end_login_node(state)
    login_log = os.path.join(state_dir(), f"{name}-login-node.log")
    for path in (_state_file(name), token_file(name), login_log):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return job


def _wait_ended(job_id: str, timeout: float = 90.0) -> None:
    """Waits until SLURM has ended the job's processes: not COMPLETING, which
    lasts while Ray stops on SIGTERM (up to the cluster's KillWait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_state(job_id)
        if job.ended and job.state != "COMPLETING":
            return
        time.sleep(0.5)


def current_job(name: str) -> JobState | None:
    state = read_state(name)
    return None if state is None else job_state(state["job"])


def address(name: str, spec: SlurmSpec) -> tuple[str, int]:
    """The head's address once start has seen the job run; ("", port) before."""
    state = read_state(name) or {}
    return state.get("host", ""), int(state.get("port", spec.port))
