"""What the live report costs the trials: the same tune with the report written
only at the end (`report-every=0`) and written while it runs as often as it
may (`report-every=1`: a page at most every second, or ten times its last
write's time), side by side, alternating, in fresh Guild homes.

The trials are one-step CPU burners (benchmarks/trivial, op `tune-cpu`: 2 s of
CPU each; quick: `tune-cpu-quick`, 0.2 s), two at a time on the machine's
cores, with a second searched value (the work, around its default) so that
every plot of the page is drawn: importance, parallel coordinates, the map of
the two values. Printed per arm: the median over the repeats of the wall
time from the first trial's start to the last one's end per trial, and of the
whole `guild run tune`; then on/off ratios. Same seed on both sides: the same
trials.

Target: live report on / off at most 1.05 per trial.

    python benchmarks/live_report.py               # 12 trials, 3 repeats
    python benchmarks/live_report.py --quick       # 2 trials, 1 repeat
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from guild_home import GuildHome

WORKLOAD = Path(__file__).resolve().parent / "trivial"
TARGET = 1.05
ARMS = {"off": "report-every=0", "on": "report-every=1"}


def main() -> int:
    args = _parse_args()
    trials = args.trials or (2 if args.quick else 12)
    repeats = args.repeats or (1 if args.quick else 3)
    op, work = ("tune-cpu-quick", "0.1:0.3") if args.quick else ("tune-cpu", "1.5:2.5")
    results: dict[str, list[tuple[float, float]]] = {arm: [] for arm in ARMS}
    for _ in range(repeats):
        for arm, flag in ARMS.items():  # alternating: the machine's load drifts
            results[arm].append(_tune(op, trials, work, flag))
    _print_table(trials, repeats, results)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials, 1 repeat")
    parser.add_argument("--trials", type=int, help="trials per tune")
    parser.add_argument("--repeats", type=int, help="tunes per arm")
    return parser.parse_args()


def _tune(op: str, trials: int, work: str, report_flag: str) -> tuple[float, float]:
    """Seconds per trial (first start to last end), and the tune's wall."""
    with GuildHome() as home:
        wall = home.run(
            WORKLOAD,
            op,
            f"max-trials={trials}",
            "max-concurrent=2",
            "seed=1",
            f"space=train:work=uniform[{work}]",
            report_flag,
        )
        ran = home.trials()
    first = min(t["started"] for t in ran)
    last = max(t["ended"] for t in ran)
    return (last - first) / trials, wall


def _print_table(trials: int, repeats: int, results) -> None:
    medians = {
        arm: (
            statistics.median(p for p, _ in runs),
            statistics.median(w for _, w in runs),
        )
        for arm, runs in results.items()
    }
    print()
    print(f"live report ({trials} trials, median of {repeats})  s/trial  tune wall s")
    for arm, (per_trial, wall) in medians.items():
        print(f"{arm + ' (' + ARMS[arm] + ')':<38}{per_trial:>8.2f}{wall:>13.2f}")
    per_trial_ratio = medians["on"][0] / medians["off"][0]
    wall_ratio = medians["on"][1] / medians["off"][1]
    print()
    print(f"on/off per trial   {per_trial_ratio:6.3f}  (target <= {TARGET})")
    print(f"on/off tune wall   {wall_ratio:6.3f}")
    print(f"target met: {'yes' if per_trial_ratio <= TARGET else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
