"""Parallel efficiency and memory of `guild run tune`.

16 one-step trials whose step burns a fixed 2 s of CPU (benchmarks/trivial,
op `tune-cpu`) run at concurrency 1 and 2. Printed for each: the wall time from
the first trial's start to the last trial's end (Ray's start excluded), the
ideal (trials x work / concurrency, at most the machine's cores), their ratio
(efficiency), and the peak memory (RSS) of the tune driver and of the whole
process tree of `guild run tune`, Ray and the steps included, sampled every
0.2 s.

Targets: efficiency at least 85% at concurrency 2 on a 2-core machine; the whole
tree at most 1.2 GB.

    python benchmarks/parallel.py            # 16 trials of 2 s
    python benchmarks/parallel.py --quick    # 3 trials of 0.5 s
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from guild_home import GUILD, GuildHome

WORKLOAD = Path(__file__).resolve().parent / "trivial"
EFFICIENCY_TARGET = 0.85
MEMORY_TARGET_MB = 1200


@dataclass
class Figures:
    concurrency: int
    wall_s: float
    ideal_s: float
    driver_mb: float
    tree_mb: float

    @property
    def efficiency(self) -> float:
        return self.ideal_s / self.wall_s


def main() -> int:
    args = _parse_args()
    op, trials, work = (
        ("tune-cpu-quick", 3, 0.5) if args.quick else ("tune-cpu", 16, 2.0)
    )
    results = [_run(op, trials, work, concurrency) for concurrency in (1, 2)]
    _print_table(trials, work, results)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 trials of 0.5 s")
    return parser.parse_args()


def _run(op: str, trials: int, work: float, concurrency: int) -> Figures:
    with GuildHome() as home:
        proc = subprocess.Popen(
            [
                GUILD,
                "run",
                "-y",
                op,
                f"max-trials={trials}",
                f"max-concurrent={concurrency}",
            ],
            cwd=WORKLOAD,
            env=home.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        driver_mb, tree_mb = _peak_memory(proc)
        if proc.returncode != 0:
            sys.exit(f"guild run {op} failed:\n{proc.stderr.read()}")
        ran = home.trials()
    wall = max(t["ended"] for t in ran) - min(t["started"] for t in ran)
    ideal = trials * work / min(concurrency, os.cpu_count() or 1)
    return Figures(concurrency, wall, ideal, driver_mb, tree_mb)


def _peak_memory(proc: subprocess.Popen) -> tuple[float, float]:
    """Peak RSS in MB of the tune driver and of the whole tree, until it exits."""
    root = psutil.Process(proc.pid)
    driver_peak = tree_peak = 0
    while proc.poll() is None:
        tree, driver = 0, 0
        for p in [root, *_children(root)]:
            try:
                rss = p.memory_info().rss
                tree += rss
                if "gpkg_ray.tuner" in " ".join(p.cmdline()):
                    driver = rss
            except psutil.Error:
                continue
        driver_peak, tree_peak = max(driver_peak, driver), max(tree_peak, tree)
        time.sleep(0.2)
    return driver_peak / 2**20, tree_peak / 2**20


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _print_table(trials: int, work: float, results: list[Figures]) -> None:
    print()
    print(f"{trials} trials of {work:g} s CPU, {os.cpu_count()} cores")
    print(
        f"{'concurrency':<12}{'wall s':>8}{'ideal s':>9}{'efficiency':>12}"
        f"{'driver MB':>11}{'tree MB':>9}"
    )
    for r in results:
        print(
            f"{r.concurrency:<12}{r.wall_s:>8.1f}{r.ideal_s:>9.1f}{r.efficiency:>12.0%}"
            f"{r.driver_mb:>11.0f}{r.tree_mb:>9.0f}"
        )
    c2 = results[-1]
    peak = max(r.tree_mb for r in results)
    target = f"target >= {EFFICIENCY_TARGET:.0%}"
    print(f"efficiency at concurrency 2: {c2.efficiency:.0%} ({target})")
    print(f"peak memory of the tree: {peak:.0f} MB (target <= {MEMORY_TARGET_MB} MB)")
    met = c2.efficiency >= EFFICIENCY_TARGET and peak <= MEMORY_TARGET_MB
    print(f"targets met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
