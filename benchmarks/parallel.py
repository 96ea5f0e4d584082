"""Parallel efficiency and memory of `guild run tune`.

16 one-step trials whose step burns a fixed 2 s of CPU (benchmarks/trivial,
op `tune-cpu`) run at concurrency 1 and 2. Printed for each: the wall time from
the first trial's start to the last trial's end (Ray's start excluded), the
ideal (trials x work / concurrency, at most the machine's cores), their ratio
(efficiency), and the peak memory of the tune driver (RSS) and of the whole
process tree of `guild run tune`, Ray and the steps included, sampled every
0.2 s: the sum of RSS (which counts a page shared by several processes once in
each) and the sum of PSS (which shares it out: what the tree takes from the
machine).

Beside them, the same steps as plain `guild run`s, two at a time from two
shells: the efficiency any tuner whose trials are Guild runs can reach here.

Targets: efficiency at least 85% at concurrency 2 on a 2-core machine; the whole
tree at most 1.2 GB.

    python benchmarks/parallel.py            # 16 trials of 2 s
    python benchmarks/parallel.py --quick    # 2 trials of 0.2 s
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
from guild_home import GUILD, GuildHome

WORKLOAD = Path(__file__).resolve().parent / "trivial"
EFFICIENCY_TARGET = 0.85
MEMORY_TARGET_MB = 1200


@dataclass
class Figures:
    name: str
    concurrency: int
    wall_s: float
    ideal_s: float
    driver_mb: float | None = None
    tree_mb: float | None = None
    tree_pss_mb: float | None = None

    @property
    def efficiency(self) -> float:
        return self.ideal_s / self.wall_s


def main() -> int:
    args = _parse_args()
    op, trials, work = (
        ("tune-cpu-quick", 2, 0.2) if args.quick else ("tune-cpu", 16, 2.0)
    )
    results = [_run(op, trials, work, concurrency) for concurrency in (1, 2)]
    results.append(_direct(trials, work, 2))
    _print_table(trials, work, results)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials of 0.2 s")
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
        driver_mb, tree_mb, tree_pss_mb = _peak_memory(proc)
        if proc.returncode != 0:
            sys.exit(f"guild run {op} failed:\n{proc.stderr.read()}")
        ran = home.trials()
    wall = max(t["ended"] for t in ran) - min(t["started"] for t in ran)
    return Figures(
        "tune",
        concurrency,
        wall,
        _ideal(trials, work, concurrency),
        driver_mb,
        tree_mb,
        tree_pss_mb,
    )


def _direct(trials: int, work: float, concurrency: int) -> Figures:
    """The trials' steps as `guild run train work=W`, `concurrency` at a time."""
    with GuildHome() as home:
        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            runs = [
                pool.submit(home.run, WORKLOAD, "train", f"work={work}", f"lr={i}")
                for i in range(trials)
            ]
            for run in runs:
                run.result()
        wall = time.monotonic() - started
    return Figures("guild runs", concurrency, wall, _ideal(trials, work, concurrency))


def _ideal(trials: int, work: float, concurrency: int) -> float:
    return trials * work / min(concurrency, os.cpu_count() or 1)


def _peak_memory(proc: subprocess.Popen) -> tuple[float, float, float]:
    """Peak memory in MB until it exits: RSS of the tune driver, and the sums
    of RSS and of PSS of the whole tree."""
    root = psutil.Process(proc.pid)
    driver_peak = tree_peak = pss_peak = 0
    while proc.poll() is None:
        tree = driver = pss = 0
        for p in [root, *_children(root)]:
            try:
                memory = p.memory_full_info()
                tree += memory.rss
                pss += memory.pss
                if "gpkg_ray.tuner" in " ".join(p.cmdline()):
                    driver = memory.rss
            except psutil.Error:
                continue
        driver_peak, tree_peak = max(driver_peak, driver), max(tree_peak, tree)
        pss_peak = max(pss_peak, pss)
        time.sleep(0.2)
    return driver_peak / 2**20, tree_peak / 2**20, pss_peak / 2**20


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _print_table(trials: int, work: float, results: list[Figures]) -> None:
    print()
    print(f"{trials} trials of {work:g} s CPU, {os.cpu_count()} cores")
    print(
        f"{'way':<12}{'concurrency':>12}{'wall s':>8}{'ideal s':>9}{'efficiency':>12}"
        f"{'driver MB':>11}{'tree RSS MB':>13}{'tree PSS MB':>13}"
    )
    for r in results:
        print(
            f"{r.name:<12}{r.concurrency:>12}{r.wall_s:>8.1f}{r.ideal_s:>9.1f}"
            f"{r.efficiency:>12.0%}{_mb(r.driver_mb):>11}{_mb(r.tree_mb):>13}"
            f"{_mb(r.tree_pss_mb):>13}"
        )
    tune_c2, direct = results[1], results[2]
    peak = max(r.tree_pss_mb or 0 for r in results)
    target = f"target >= {EFFICIENCY_TARGET:.0%}"
    print(
        f"efficiency at concurrency 2: {tune_c2.efficiency:.0%} ({target}); "
        f"{tune_c2.efficiency / direct.efficiency:.0%} of plain guild runs'"
    )
    print(
        f"peak memory of the tree (PSS): {peak:.0f} MB "
        f"(target <= {MEMORY_TARGET_MB} MB)"
    )
    met = tune_c2.efficiency >= EFFICIENCY_TARGET and peak <= MEMORY_TARGET_MB
    print(f"targets met: {'yes' if met else 'no'}")


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    sys.exit(main())
