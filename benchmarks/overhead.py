"""Trial overhead and fixed cost of `guild run tune`.

A trivial two-step trial (benchmarks/trivial: `train` and `evaluate` each print
one scalar) is run N times four ways, in fresh Guild homes, and the wall time
per trial is printed for each:

    direct        `guild run train lr=X` then `guild run evaluate`, N times
    guild batch   Guild's own grid batch of the same trial (a pipeline op)
    tune c=1      `guild run tune`, one trial at a time
    tune c=2      `guild run tune`, two at a time

A tune's time per trial is measured from its first trial's start to its last
trial's end (trials.json), so Ray's start is not in it; that is the fixed cost,
printed apart: from `guild run tune` to the first trial's start, and the
embedded Ray's start and stop, timed in this process.

Targets: tune c=1 costs at most 0.3 s per trial more than the direct runs.
Stretch: tune c=2 costs less per trial than Guild's batch.

    python benchmarks/overhead.py            # 10 trials each way
    python benchmarks/overhead.py --quick    # 3 trials each way
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from guild_home import GuildHome

WORKLOAD = Path(__file__).resolve().parent / "trivial"
OVERHEAD_TARGET = 0.3
FIRST_TRIAL_TARGET = 5.0


def main() -> int:
    args = _parse_args()
    n = args.trials or (3 if args.quick else 10)
    lrs = [round(0.001 * (i + 1), 4) for i in range(n)]
    per_trial = {
        "direct": _direct(lrs),
        "guild batch": _guild_batch(lrs),
    }
    to_first = {}
    for concurrency in (1, 2):
        per_trial[f"tune c={concurrency}"], to_first[concurrency] = _tune(
            n, concurrency
        )
    ray_start, ray_stop = _embedded_ray_start_stop()
    _print_tables(n, per_trial, to_first, ray_start, ray_stop)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 trials each way")
    parser.add_argument("--trials", type=int, help="trials each way")
    return parser.parse_args()


def _direct(lrs: list[float]) -> float:
    with GuildHome() as home:
        wall = sum(
            home.run(WORKLOAD, "train", f"lr={lr}") + home.run(WORKLOAD, "evaluate")
            for lr in lrs
        )
    return wall / len(lrs)


def _guild_batch(lrs: list[float]) -> float:
    values = ",".join(str(lr) for lr in lrs)
    with GuildHome() as home:
        return home.run(WORKLOAD, "trial", f"lr=[{values}]") / len(lrs)


def _tune(n: int, concurrency: int) -> tuple[float, float]:
    """Seconds per trial, and from launch to the first trial's start."""
    with GuildHome() as home:
        launched = time.time()
        home.run(
            WORKLOAD,
            "tune",
            f"max-trials={n}",
            f"max-concurrent={concurrency}",
            "seed=1",
        )
        trials = home.trials()
    first = min(t["started"] for t in trials)
    last = max(t["ended"] for t in trials)
    return (last - first) / n, first - launched


def _embedded_ray_start_stop() -> tuple[float, float]:
    from gpkg_ray.engine.local_ray import embedded_ray

    started = time.monotonic()
    with embedded_ray():
        ready = time.monotonic()
    return ready - started, time.monotonic() - ready


def _print_tables(n, per_trial, to_first, ray_start, ray_stop) -> None:
    print()
    print(f"{'per trial (' + str(n) + ' trials)':<28}{'wall s':>8}")
    for name, seconds in per_trial.items():
        print(f"{name:<28}{seconds:>8.2f}")
    overhead = per_trial["tune c=1"] - per_trial["direct"]
    batch_ratio = per_trial["tune c=2"] / per_trial["guild batch"]
    print()
    print(
        f"overhead c=1 vs direct      {overhead:6.2f} s  (target <= {OVERHEAD_TARGET})"
    )
    print(f"tune c=2 / guild batch      {batch_ratio:6.2f}    (stretch < 1)")
    print()
    print(f"{'fixed cost':<28}{'s':>8}")
    for concurrency, seconds in to_first.items():
        print(f"{'launch to first trial c=' + str(concurrency):<28}{seconds:>8.2f}")
    print(f"{'embedded Ray start':<28}{ray_start:>8.2f}")
    print(f"{'embedded Ray stop':<28}{ray_stop:>8.2f}")
    met = overhead <= OVERHEAD_TARGET and to_first[1] <= FIRST_TRIAL_TARGET
    print(f"targets met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
