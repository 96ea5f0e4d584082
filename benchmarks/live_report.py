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

`--writer` measures the writer alone, in this process, with no tune: the
engine's events of 20 trials (5 reports each, 0.1 s apart) given to a live
report (`report-every=1`): the time each event takes on the engine's thread,
and the writer thread's pages and CPU share (its own CPU time, from /proc).

    python benchmarks/live_report.py               # 12 trials, 3 repeats
    python benchmarks/live_report.py --quick       # 2 trials, 1 repeat
    python benchmarks/live_report.py --writer      # the writer alone
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from guild_home import GuildHome

WORKLOAD = Path(__file__).resolve().parent / "trivial"
TARGET = 1.05
ARMS = {"off": "report-every=0", "on": "report-every=1"}


def main() -> int:
    args = _parse_args()
    if args.writer:
        _writer_alone()
        return 0
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
    parser.add_argument("--writer", action="store_true", help="the writer alone")
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


def _writer_alone(trials: int = 20, reports: int = 5) -> None:
    import math
    import random
    import shutil
    import tempfile

    from gpkg_ray.listener import SearchStarted
    from gpkg_ray.results.live_report import LiveReport
    from gpkg_ray.results.report import TuneRun
    from gpkg_ray.trial.outcome import TrialOutcome
    from gpkg_ray.tuning_spec import (
        Choice,
        Objective,
        Param,
        Range,
        Settings,
        Step,
        TrialPlan,
        TuneSpec,
    )

    objective = Objective("acc", "max", "train")
    params = (
        Param("lr", Range(1e-5, 1e-1, log=True), (("train", "lr"),)),
        Param("dropout", Range(0.0, 0.5), (("train", "dropout"),)),
        Param("batch-size", Choice((16, 32, 64)), (("train", "batch-size"),)),
    )
    spec = TuneSpec(
        TrialPlan((Step("train", "train"),), params, objective, objective), Settings()
    )
    home = tempfile.mkdtemp(prefix="gpkg-ray-bench-")
    live = LiveReport(home, spec, home, TuneRun("0" * 32, 1), every=1.0)
    live.search_started(SearchStarted(trials=trials, seed=1, scheduler="fifo"))
    time.sleep(3)  # the writer imports matplotlib first
    thread = live._thread.native_id
    rng = random.Random(1)
    on_engine, events = 0.0, 0
    cpu, wall, writes = _thread_cpu(thread), time.monotonic(), live.writes
    for number in range(1, trials + 1):
        values = {
            "lr": 10 ** rng.uniform(-5, -1),
            "dropout": rng.uniform(0, 0.5),
            "batch-size": rng.choice([16, 32, 64]),
        }
        outcome = TrialOutcome(number, values)
        calls = [live.trial_started] + [live.trial_updated] * reports
        for call in [*calls, live.trial_ended]:
            if call == live.trial_ended:
                outcome.status = "completed"
                outcome.objective = -((math.log10(values["lr"]) + 3) ** 2)
                outcome.ended = time.time()
            else:
                time.sleep(0.1)
            began = time.perf_counter()
            call(outcome)
            on_engine += time.perf_counter() - began
            events += 1
    wall = time.monotonic() - wall
    cpu = _thread_cpu(thread) - cpu
    writes = live.writes - writes
    live.close()
    shutil.rmtree(home, ignore_errors=True)
    per_event = on_engine / events * 1e6
    print()
    print(f"engine thread per event   {per_event:8.0f} us ({events} events)")
    print(f"writer pages              {writes:8d} in {wall:.1f} s")
    print(
        f"writer CPU                {cpu:8.2f} s = {100 * cpu / wall:.1f}% of one core"
    )


def _thread_cpu(native_id: int) -> float:
    """CPU seconds of one thread of this process (Linux)."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
