"""Starts and stops Ray on a member of a `remotes-cluster`; run there over
ssh by `guild remote start|stop` (gpkg_ray.remote.remotes_cluster).

    python3 -m gpkg_ray.remote.member_main start  # stdin: cluster, head, token, ...
    python3 -m gpkg_ray.remote.member_main stop   # stdin: what start printed

The request is read from stdin (the token with it: never on a command line,
never in a file). `start` runs `ray start --address=HEAD --block` detached
(a session of its own, so it outlives the ssh session), waits until Ray says
it is up, and prints one JSON line: the pid and start time of `ray start`
and of every process it started (what `stop` ends, and nothing else), the
node's address and the temp dirs it made. `stop` ends exactly the recorded
processes that still have their recorded start times, with what they
started, and removes those temp dirs. An error is {"error": "..."} and exit
status 1.
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

START_TIMEOUT = 90.0
STARTED = "Ray runtime started."
"""What `ray start` prints once the node is up."""
TEMP_PREFIX = "gpkg-rc-"
"""Prefix of the cluster's temp dirs, on every host: short, since Ray puts
its sockets in them (at most 107 bytes a path)."""


def node_ip_for(head: str) -> str:
    """This host's address on the route to the head (no packet is sent)."""
    host, _, port = head.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, int(port)))
        return s.getsockname()[0]


def state_dir() -> str:
    path = os.path.join(os.path.expanduser("~"), ".guild", "ray-clusters")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def start(request: dict) -> dict:
    head, token = request["head"], request["token"]
    ip = node_ip_for(head)
    # Ray's own files (ray_current_cluster, ...) in a dir of this cluster's,
    # not the host's shared /tmp/ray.
    ray_tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    os.makedirs(os.path.join(ray_tmp, "ray"))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    log_path = os.path.join(
        state_dir(), f"{request['cluster']}-{secrets.token_hex(4)}.log"
    )
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={head}",
            f"--node-ip-address={ip}", "--disable-usage-stats", "--block"]  # fmt: skip
    with open(os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this ssh session
        )
    temp_dirs = [ray_tmp, request["head_temp_dir"]]
    try:
        _wait_started(proc, log_path)
    except RuntimeError:
        _end(proc.pid, None, [], temp_dirs)
        raise
    import psutil

    from gpkg_ray.processes import handles

    me = psutil.Process(proc.pid)
    return {
        "pid": proc.pid,
        "created": me.create_time(),
        "processes": handles(me.children(recursive=True)),
        "ip": ip,
        "temp_dirs": temp_dirs,
        "log": log_path,
    }


def _wait_started(proc: subprocess.Popen, log_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with open(log_path, errors="replace") as f:
            text = f.read()
        if STARTED in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited {proc.returncode}: {_tail(text)}")
        time.sleep(0.2)
    raise RuntimeError(f"ray start did not start in {START_TIMEOUT:g} s")


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def stop(request: dict) -> dict:
    ended = _end(
        request["pid"],
        request.get("created"),
        request.get("processes") or [],
        request.get("temp_dirs") or [],
    )
    log = request.get("log")
    if log and os.path.dirname(log) == state_dir():
        with contextlib.suppress(FileNotFoundError):
            os.remove(log)
    return {"ended": ended}


def _end(pid: int, created: float | None, recorded: list, temp_dirs: list) -> int:
    """Ends `ray start`, what it started and any recorded process left, each
    only while it has its recorded start time. Returns how many processes
    were running."""
    from gpkg_ray.processes import find_processes, process_tree, stop_processes

    supervisor = find_processes([[pid, created] if created else pid], time.time())
    found = find_processes(recorded)
    everything = {p.pid: p for s in supervisor + found for p in process_tree(s)}
    # All at once, then SIGKILL after a grace: waiting for `ray start` to
    # stop its own took 30 s and more (a gcs_server ignores SIGTERM once its
    # raylet is gone).
    stop_processes(list(everything.values()))
    for path in temp_dirs:
        # Only dirs of the shape this cluster makes: the request could be edited.
        if os.path.basename(str(path)).startswith(TEMP_PREFIX):
            import shutil

            shutil.rmtree(path, ignore_errors=True)
    return len(everything)


def main(argv: list[str]) -> int:
    try:
        request = json.loads(sys.stdin.read())
        reply = {"start": start, "stop": stop}[argv[1]](request)
    except Exception as e:  # reported to the caller as data
        print(json.dumps({"error": str(e).strip().splitlines()[0] or repr(e)}))
        return 1
    print(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
