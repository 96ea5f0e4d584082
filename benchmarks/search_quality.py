"""Search quality: random search against TPE on standard test functions.

Each test function (benchmarks/test_functions: Branin, Hartmann-6, run as Guild
ops that print `value`) is minimized by `guild run tune` with `search=random`
and with `search=tpe`, for several seeds, 2 trials at a time. Printed: the median
over seeds of the best value after the first 20 and after all 50 trials (by
trial number), and the known minimum.

Target: TPE's median beats random's on every function.

    python benchmarks/search_quality.py            # 2 functions, 5 seeds, 50 trials
    python benchmarks/search_quality.py --quick    # Branin, 1 seed, 4 trials
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from guild_home import GuildHome

WORKLOAD = Path(__file__).resolve().parent / "test_functions"
MINIMA = {"branin": 0.397887, "hartmann6": -3.32237}
SEARCHES = ("random", "tpe")


def main() -> int:
    args = _parse_args()
    functions = ["branin"] if args.quick else list(MINIMA)
    seeds = range(1, 2 if args.quick else 6)
    trials = 4 if args.quick else 50
    checkpoints = (trials // 2, trials) if args.quick else (20, 50)
    rows = []
    for function in functions:
        medians = {}
        for search in SEARCHES:
            bests = [
                _best_after(function, search, seed, trials, checkpoints)
                for seed in seeds
            ]
            medians[search] = [statistics.median(b[i] for b in bests) for i in range(2)]
        rows.append((function, medians))
    _print_table(rows, checkpoints, len(seeds))
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Branin, 1 seed, 4 trials")
    return parser.parse_args()


def _best_after(
    function: str, search: str, seed: int, trials: int, checkpoints: tuple[int, int]
) -> list[float]:
    """Best value among the first N trials, for each N in checkpoints."""
    with GuildHome() as home:
        home.run(
            WORKLOAD,
            f"tune-{function}",
            f"search={search}",
            f"seed={seed}",
            f"max-trials={trials}",
            "max-concurrent=2",
        )
        by_number = sorted(home.trials(), key=lambda t: t["trial"])
    values = [t["objective"] for t in by_number if t["objective"] is not None]
    return [min(values[:n]) for n in checkpoints]


def _print_table(rows, checkpoints: tuple[int, int], seeds: int) -> None:
    first, last = checkpoints
    print()
    print(f"median best value over {seeds} seeds (lower is better)")
    at_first, at_last = f"@{first}", f"@{last}"
    print(f"{'function':<11}{'search':<8}{at_first:>10}{at_last:>10}{'minimum':>10}")
    beats = True
    for function, medians in rows:
        for search in SEARCHES:
            at_first, at_last = medians[search]
            print(
                f"{function:<11}{search:<8}{at_first:>10.4f}{at_last:>10.4f}"
                f"{MINIMA[function]:>10.4f}"
            )
        beats &= medians["tpe"][1] < medians["random"][1]
    print(f"tpe beats random on every function: {'yes' if beats else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
