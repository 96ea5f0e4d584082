"""Search quality: random search against TPE, GP and CMA-ES on standard test
functions, side by side in one run.

Each test function (benchmarks/test_functions: Branin, Hartmann-6, run as Guild
ops that print `value`) is minimized by `guild run tune` with each search, for
several seeds, 2 trials at a time. Printed: the median over seeds of the best
value after the first 20 and after all 50 trials (by trial number), and the
known minimum.

`search=gp` needs PyTorch in the tune's process: the repo's .torch/ (the
tests' PyTorch) is put on the PYTHONPATH of the gp tunes only (every step run
then imports torch too, which costs time, not quality); without it gp is left
out, and the table says so.

Target: each of tpe, gp and cmaes has a median that beats random's on every
function.

    python benchmarks/search_quality.py            # 2 functions, 5 seeds, 50 trials
    python benchmarks/search_quality.py --quick    # Branin, 1 seed, 4 trials,
                                                   # random and tpe
    python benchmarks/search_quality.py --seeds 3 --trials 30 --functions branin
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from guild_home import GuildHome

WORKLOAD = Path(__file__).resolve().parent / "test_functions"
MINIMA = {"branin": 0.397887, "hartmann6": -3.32237}
SEARCHES = ("random", "tpe", "gp", "cmaes")
QUICK_SEARCHES = ("random", "tpe")
TORCH = Path(__file__).resolve().parent.parent / ".torch"


def main() -> int:
    args = _parse_args()
    functions = args.functions or (["branin"] if args.quick else list(MINIMA))
    seeds = range(1, 1 + (args.seeds or (1 if args.quick else 5)))
    trials = args.trials or (4 if args.quick else 50)
    checkpoints = (trials // 2, trials) if trials < 50 else (20, trials)
    searches = QUICK_SEARCHES if args.quick else SEARCHES
    if "gp" in searches and not (TORCH / "torch").is_dir():
        print(f"search=gp left out: no PyTorch in {TORCH}")
        searches = tuple(s for s in searches if s != "gp")
    rows = []
    for function in functions:
        medians = {}
        for search in searches:
            bests = [
                _best_after(function, search, seed, trials, checkpoints)
                for seed in seeds
            ]
            medians[search] = [statistics.median(b[i] for b in bests) for i in range(2)]
        rows.append((function, medians))
    _print_table(rows, checkpoints, len(seeds), searches)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="Branin, 1 seed, 4 trials, random and tpe"
    )
    parser.add_argument("--seeds", type=int, help="seeds 1 to N (5)")
    parser.add_argument("--trials", type=int, help="trials per tune (50)")
    parser.add_argument("--functions", nargs="+", choices=sorted(MINIMA))
    return parser.parse_args()


def _best_after(
    function: str, search: str, seed: int, trials: int, checkpoints: tuple[int, int]
) -> list[float]:
    """Best value among the first N trials, for each N in checkpoints."""
    with GuildHome() as home:
        if search == "gp":
            path = os.pathsep.join(filter(None, [str(TORCH), os.getenv("PYTHONPATH")]))
            home.env["PYTHONPATH"] = path
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


def _print_table(
    rows, checkpoints: tuple[int, int], seeds: int, searches: tuple[str, ...]
) -> None:
    first, last = checkpoints
    print()
    print(f"median best value over {seeds} seeds (lower is better)")
    at_first, at_last = f"@{first}", f"@{last}"
    print(f"{'function':<11}{'search':<8}{at_first:>10}{at_last:>10}{'minimum':>10}")
    beats = {search: True for search in searches if search != "random"}
    for function, medians in rows:
        for search in searches:
            at_first, at_last = medians[search]
            print(
                f"{function:<11}{search:<8}{at_first:>10.4f}{at_last:>10.4f}"
                f"{MINIMA[function]:>10.4f}"
            )
        for search in beats:
            beats[search] &= medians[search][1] < medians["random"][1]
    for search, beat in beats.items():
        print(f"{search} beats random on every function: {'yes' if beat else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
