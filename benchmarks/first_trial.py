"""Time to the first trial, and what Ray's processes cost a tune.

Measured side by side in one run, each in fresh processes:

    Ray's own start       `ray.init(address="local", include_dashboard=False)`
                          alone, its import left out (plain Ray, as a user
                          would start it; loopback only, in a temp dir)
    embedded Ray start    gpkg.ray's embedded Ray (engine/local_ray.py),
                          entered alone, Ray's import in it
    launch to first step  from `guild run tune` (a one-trial tune of the
                          trivial workload) to its first step's start (the
                          step run's `started`), split at Guild's start of the
                          tune run and the first trial's start
    Ray CPU per tune      CPU seconds of the tune's Ray processes (GCS,
                          raylet, agents, monitors, idle workers; not the
                          driver, the trial's actor or the steps), sampled
                          every 0.1 s until the tune ends

Target (issue 22): launch to first step at most Ray's own start + 2 s.
With `--cluster`, the same tune on a local cluster that is already up
(`guild remote start`), against its target of 3 s.

    python benchmarks/first_trial.py [--quick] [--repeat N] [--cluster]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import psutil
from guild_home import GUILD, GuildHome

WORKLOAD = Path(__file__).resolve().parent / "trivial"
EMBEDDED_TARGET = 2.0
"""Launch to first step, at most this much more than Ray's own start."""
CLUSTER_TARGET = 3.0
"""Launch to first step on a cluster that is already up."""

RAY_HELPERS = (
    "gcs_server",
    "raylet",
    "dashboard",
    "agent",
    "monitor",
    "log_monitor",
    "ray::IDLE",
    "default_worker",
    "runtime_env",
)
"""Words of a Ray helper's name or command line (not the driver's, a trial
actor's, or a step's)."""

RAY_START = textwrap.dedent(
    """
    import os, secrets, shutil, tempfile, time
    # Loopback only, and the token in the environment: nothing in ~/.ray.
    os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                      RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                      RAY_AUTH_TOKEN=secrets.token_hex(32))
    import ray
    temp = tempfile.mkdtemp(prefix="gpkg-ray-bench-")
    try:
        started = time.monotonic()
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 _temp_dir=temp)
        print(time.monotonic() - started)
        ray.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    """
)

EMBEDDED_START = textwrap.dedent(
    """
    import psutil, time
    started = time.monotonic()
    from gpkg_ray.engine.local_ray import embedded_ray
    with embedded_ray() as ray:
        print(time.monotonic() - started)
        print(len(ray.processes))
    """
)


@dataclass
class TuneTimes:
    """One tune's times (seconds from launch) and its Ray processes' CPU."""

    run_started: float
    trial_started: float
    step_started: float
    ray_cpu: float
    ray_processes: dict[str, float] = field(default_factory=dict)


def main() -> int:
    args = _parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    ray_start, embedded, tunes = [], [], []
    for _ in range(repeat):
        ray_start.append(_python_seconds(RAY_START)[0])
        embedded.append(_python_seconds(EMBEDDED_START)[0])
        tunes.append(_tune())
    cluster = _on_cluster(repeat) if args.cluster else None
    _print_table(ray_start, embedded, tunes, cluster)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each figure once")
    parser.add_argument("--repeat", type=int, help="runs of each (default 3)")
    parser.add_argument(
        "--cluster", action="store_true", help="also on a local cluster already up"
    )
    return parser.parse_args()


def _python_seconds(code: str) -> list[float]:
    """Runs `code` in a fresh Python; the numbers it prints."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        sys.exit(f"failed:\n{code}\n{result.stdout}{result.stderr}")
    return [float(line) for line in result.stdout.split()]


def _tune(*flags: str, env: dict[str, str] | None = None) -> TuneTimes:
    """A one-trial tune of the trivial workload, its times from launch."""
    with GuildHome() as home:
        launched = time.time()
        proc = subprocess.Popen(
            [GUILD, "run", "-y", "tune", "max-trials=1", "seed=1", *flags],
            cwd=WORKLOAD,
            env={**home.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ray_cpu = _ray_cpu(proc)
        output = proc.stdout.read()
        if proc.wait() != 0:
            sys.exit(f"guild run tune failed:\n{output}")
        (trial,) = home.trials()
        return TuneTimes(
            home.started() - launched,
            trial["started"] - launched,
            _first_step_started(home.path) - launched,
            sum(ray_cpu.values()),
            ray_cpu,
        )


def _ray_cpu(proc: subprocess.Popen) -> dict[str, float]:
    """CPU seconds (user + system) of each Ray helper in the tree of `proc`,
    as last seen before it ended, keyed by `name pid` (a worker that became
    the trial's actor is left out)."""
    root = psutil.Process(proc.pid)
    seen: dict[int, tuple[str, float]] = {}
    while proc.poll() is None:
        try:
            children = root.children(recursive=True)
        except psutil.Error:
            children = []
        for p in children:
            try:
                with p.oneshot():
                    label = _label(p.name(), p.cmdline())
                    times = p.cpu_times()
                seen[p.pid] = (label, times.user + times.system)
            except psutil.Error:
                continue
        time.sleep(0.1)
    return {f"{label} {pid}": cpu for pid, (label, cpu) in seen.items() if label}


def _label(name: str, cmdline: list[str]) -> str:
    """The Ray helper a process is, or "" (the driver, a trial, a step)."""
    if name.startswith("ray::"):  # Ray's agents, idle workers; or an actor
        return name if name.endswith(("IDLE", "Agent")) else ""
    words = " ".join(cmdline[:4])
    for word in RAY_HELPERS:
        if word in name or word in words:
            script = next((w for w in cmdline if w.endswith(".py")), "")
            return Path(script).stem if script else name
    return ""


def _first_step_started(guild_home: Path) -> float:
    """When the first step run started (Unix seconds): the earliest `started`
    of the runs other than the tune."""
    started = []
    for run in (guild_home / "runs").iterdir():
        attrs = run / ".guild" / "attrs"
        if (run / "trials.json").exists() or not (attrs / "started").exists():
            continue
        started.append(int((attrs / "started").read_text().strip()) / 1e6)
    return min(started)


def _on_cluster(repeat: int) -> list[TuneTimes]:
    """The same tune on a local cluster (one worker node of 2 CPUs) that is
    up before the tune starts; its state files in a temp HOME."""
    with tempfile.TemporaryDirectory(prefix="gpkg-ray-bench-") as home:
        config = Path(home) / "guild-config.yml"
        config.write_text(
            "remotes:\n  bench:\n    type: ray-cluster\n"
            f"    address: 127.0.0.1:{_free_port()}\n"
            "    local: {workers: 1, cpus: 2}\n"
        )
        env = {
            **os.environ,
            "HOME": home,
            "GUILD_CONFIG": str(config),
            "NO_PIP_FREEZE": "1",
        }
        _guild(env, "remote", "start", "-y", "bench")
        try:
            return [_tune("cluster=bench", env=env) for _ in range(repeat)]
        finally:
            _guild(env, "remote", "stop", "-y", "bench")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _guild(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [GUILD, *args], env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        sys.exit(f"guild {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


def _print_table(
    ray_start: list[float],
    embedded: list[float],
    tunes: list[TuneTimes],
    cluster: list[TuneTimes] | None,
) -> None:
    def row(name: str, values: list[float]) -> None:
        print(f"{name:<34}{median(values):>8.2f}{min(values):>8.2f}{max(values):>8.2f}")

    print()
    print(
        f"{'embedded Ray, ' + str(len(tunes)) + ' runs':<34}"
        f"{'median':>8}{'min':>8}{'max':>8}"
    )
    row("Ray's own start (ray.init)", ray_start)
    row("embedded Ray start", embedded)
    row("launch to tune run started", [t.run_started for t in tunes])
    row("launch to first trial", [t.trial_started for t in tunes])
    row("launch to first step", [t.step_started for t in tunes])
    gaps = [t.step_started - r for t, r in zip(tunes, ray_start, strict=True)]
    row("first step - Ray's own start", gaps)
    row("Ray CPU per tune (s)", [t.ray_cpu for t in tunes])
    gap = median(gaps)
    met = "yes" if gap <= EMBEDDED_TARGET else "no"
    print(
        f"target +{EMBEDDED_TARGET:g} s over Ray's own start: {gap:+.2f} s, met: {met}"
    )
    last = tunes[-1].ray_processes
    print(
        "Ray CPU by process (last tune): "
        + ", ".join(
            f"{name.rsplit(' ', 1)[0]} {cpu:.2f}"
            for name, cpu in sorted(last.items(), key=lambda item: -item[1])
        )
    )
    if cluster:
        print()
        row("cluster up: launch to first step", [t.step_started for t in cluster])
        step = median(t.step_started for t in cluster)
        met = "yes" if step <= CLUSTER_TARGET else "no"
        print(f"target {CLUSTER_TARGET:g} s on a cluster already up: met: {met}")


if __name__ == "__main__":
    sys.exit(main())
