"""Fault injection: a tune killed with SIGKILL at named points, restarted until
it completes, then checked.

Each case runs a real tune (`benchmarks/faults/`: `train` then `evaluate`, an
embedded Ray) with `guild run tune` in a session of its own, and kills its
whole process group at one point (the test hook gpkg_ray.faults, armed by
GPKG_RAY_FAULT in the environment of that `guild run` only); then it runs
`guild run --restart TUNE_RUN -y`, as a user would, until the tune completes.
The `restart` case kills the first restart too, while it ends what the killed
attempt left; `chain` kills three times (the quick mode). Then, in the case's
own Guild home and temp dir:

    trials       trials in trials.json: every one completed, numbered 1..N
    dups         trials with two completed runs of one step (one ran twice)
    running      Guild runs not ended (running, pending, staged)
    procs        processes of any of the case's sessions still alive once the
                 last `guild run` has returned (Ray's included); the script
                 then kills them by pid
    orphans      processes of a killed `guild run`'s session still alive as it
                 returned (Ray's workers, step launchers and steps have their
                 own process groups): what the restart must end
    temp         what is left in the case's TMPDIR (the embedded Ray's temp
                 dir, a step's stderr file) and files written aside
                 (`.NAME.*.tmp`) in the tune run

A case is OK when the kill came (`guild run` ended by SIGKILL), the last
restart exited 0 and every count is as it should be. Exits 1 if one is not.

    python benchmarks/fault_injection.py            # 14 cases, 6 trials each
    python benchmarks/fault_injection.py --quick    # `chain` alone, 2 trials
    python benchmarks/fault_injection.py --points steps-running tune-end
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

WORKLOAD = Path(__file__).resolve().parent / "faults"
GUILD = str(Path(sys.executable).parent / "guild")
RUN_TIMEOUT = 300
EXIT_WAIT_SECONDS = 3.0
"""How long a process of an ended `guild run`'s session may take to exit
(reaped by init, say) before it counts as left."""

POINTS: dict[str, tuple[str, ...]] = {
    # name: GPKG_RAY_FAULT of each killed `guild run`, in order
    "before-ray": ("before-ray",),  # the attempt journaled, Ray not started
    "ray-starting": ("ray-starting",),  # Ray up, not yet in the journal
    "ray-up": ("ray-up",),  # in the journal, before the first trial
    "step-starting": ("step-starting",),  # a step's `guild run` just forked
    "steps-running": ("steps-running:3",),
    "between-steps": ("between-steps",),  # train ended, evaluate not started
    "journal-write": ("journal-write:6",),  # a journal line cut on disk
    "record-write": ("record-write:2",),  # a trial record's scalars written
    "trial-ended": ("trial-ended:2",),  # a trial's end told, before the next
    "results-write": ("results-write",),  # trials.csv written aside
    "report-write": ("report-write",),  # the report's first plot written
    "tune-end": ("tune-end",),  # every result written, the run not ended
    "restart": ("steps-running:3", "resume-cleanup"),  # the restart killed too
    # Three kills, one tune: Ray's start, a restart's cleanup, running steps.
    "chain": ("ray-starting", "resume-cleanup", "steps-running:3"),
}
QUICK_POINTS = ("chain",)


@dataclass
class Case:
    point: str
    kills: int = 0
    orphans: int = 0
    """Processes of a killed `guild run`'s session alive as it returned (most
    of all its kills): what the kill left for the restart to end."""
    restarts: int = 0
    trials: int = 0
    dups: int = 0
    running: int = 0
    procs: list[str] = field(default_factory=list)
    temp: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def main() -> int:
    args = _parse_args()
    points = args.points or (QUICK_POINTS if args.quick else tuple(POINTS))
    unknown = [p for p in points if p not in POINTS]
    if unknown:
        sys.exit(f"unknown point(s) {unknown}: use {', '.join(POINTS)}")
    trials = args.trials or (2 if args.quick else 6)
    cases = [_run_case(p, trials, args.concurrency, args.keep) for p in points]
    _print_table(cases, trials)
    return 0 if all(c.ok for c in cases) else 1


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="chain, 2 trials")
    parser.add_argument("--points", nargs="+", help=f"of: {' '.join(POINTS)}")
    parser.add_argument("--trials", type=int, help="max-trials (6; quick: 2)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep each case's dir")
    return parser.parse_args()


class Tune:
    """One case's Guild home and temp dir, and the sessions of its `guild run`s."""

    def __init__(self, base: Path):
        self.base = base
        self.guild_home = base / "guild-home"
        self.tmp = base / "tmp"  # short: Ray puts sockets in its temp dir
        self.guild_home.mkdir()
        self.tmp.mkdir()
        self.sessions: list[int] = []
        self.outputs: list[str] = []
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAY_", "GUILD_", "RUN_", "FLAG_", "TUNE_", "GPKG_"))
        }
        self.env = {
            **env,
            "GUILD_HOME": str(self.guild_home),
            "TMPDIR": str(self.tmp),
            "NO_PIP_FREEZE": "1",
        }

    def run(self, args: list[str], fault: str | None) -> int:
        """`guild run -y ARGS` in a session of its own; its exit status."""
        env = dict(self.env)
        if fault:
            env["GPKG_RAY_FAULT"] = fault
        log = self.base / f"output-{len(self.outputs) + 1}.txt"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [GUILD, "run", "-y", *args],
                cwd=WORKLOAD,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.sessions.append(proc.pid)
            try:
                status = proc.wait(RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                status = proc.wait()
        self.outputs.append(log.read_text())
        return status

    def tune_run(self):
        from guild import run as guild_run

        runs = [
            guild_run.Run(i, str(self.guild_home / "runs" / i)) for i in self._ids()
        ]
        (tune,) = [r for r in runs if r.opref and r.opref.op_name == "tune"]
        return tune

    def runs(self) -> list:
        from guild import run as guild_run

        return [
            guild_run.Run(i, str(self.guild_home / "runs" / i)) for i in self._ids()
        ]

    def _ids(self) -> list[str]:
        runs = self.guild_home / "runs"
        return sorted(os.listdir(runs)) if runs.exists() else []

    def left_processes(self) -> list[psutil.Process]:
        """Live processes of any session this case's `guild run`s started,
        given EXIT_WAIT_SECONDS to exit."""
        deadline = time.monotonic() + EXIT_WAIT_SECONDS
        while True:
            left = self.session_processes()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)

    def session_processes(self, which: list[int] | None = None) -> list:
        """Live processes of the sessions of this case's `guild run`s (of
        those at the indexes `which`)."""
        sessions = {self.sessions[i] for i in which} if which else set(self.sessions)
        found = []
        for proc in psutil.process_iter():
            try:
                if (
                    os.getsid(proc.pid) in sessions
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(proc)
            except (psutil.Error, OSError):
                pass
        return found


def _run_case(point: str, trials: int, concurrency: int, keep: bool) -> Case:
    case = Case(point)
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="fi-"))
    tune = Tune(base)
    flags = [
        "tune",
        f"max-trials={trials}",
        f"max-concurrent={concurrency}",
        "search=random",
        "seed=1",
    ]
    try:
        _kill_and_restart(tune, case, flags, POINTS[point])
        if case.ok:
            _check(tune, case, trials)
    finally:
        leftovers = tune.left_processes()
        case.procs = [_describe(p) for p in leftovers]
        for proc in leftovers:  # by pid, after they were reported
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if case.procs:
            case.problems.append(f"processes left: {case.procs}")
        case.seconds = time.monotonic() - started
        if keep or not case.ok:
            print(f"{point}: kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return case


def _kill_and_restart(tune: Tune, case: Case, flags: list[str], faults) -> None:
    """The tune killed at each of `faults` in turn (the first `guild run tune`,
    then restarts), then restarted until it completes."""
    status = tune.run(flags, faults[0])
    for i, fault in enumerate([*faults[1:], None]):
        if status != -signal.SIGKILL:
            case.problems.append(
                f"`guild run` {i + 1} was not killed at {faults[i]} "
                f"(exit {status}): {_tail(tune.outputs[-1])}"
            )
            return
        case.kills += 1
        case.orphans = max(case.orphans, len(tune.session_processes([-1])))
        try:
            run_id = tune.tune_run().id
        except ValueError:
            case.problems.append("no tune run after the kill")
            return
        status = tune.run(["--restart", run_id], fault)
        case.restarts += 1
    if status != 0:
        case.problems.append(
            f"the last restart exited {status}: {_tail(tune.outputs[-1])}"
        )


def _check(tune: Tune, case: Case, max_trials: int) -> None:
    tune_run = tune.tune_run()
    trials = _trials(tune_run.dir)
    case.trials = len(trials)
    numbers = [t["trial"] for t in trials]
    if numbers != list(range(1, max_trials + 1)):
        case.problems.append(f"trial numbers {numbers}")
    not_completed = [t["trial"] for t in trials if t["status"] != "completed"]
    if not_completed:
        case.problems.append(f"trials not completed: {not_completed}")
    case.dups = _duplicates(tune, trials)
    if case.dups:
        case.problems.append(f"{case.dups} trials ran a step twice")
    statuses = {r.id: r.status for r in tune.runs()}
    open_runs = [
        i[:8] for i, s in statuses.items() if s in ("running", "pending", "staged")
    ]
    case.running = len(open_runs)
    if open_runs:
        case.problems.append(f"runs not ended: {open_runs}")
    if statuses[tune_run.id] != "completed":
        case.problems.append(f"tune run {statuses[tune_run.id]}")
    records = [r for r in tune.runs() if r.opref and r.opref.op_name == "trial"]
    record_statuses = Counter(r.status for r in records)
    if record_statuses != Counter({"completed": max_trials}):
        case.problems.append(f"trial records {dict(record_statuses)}")
    case.temp = sorted(os.listdir(tune.tmp)) + _written_aside(tune_run.dir)
    if case.temp:
        case.problems.append(f"temp files left: {case.temp}")


def _trials(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "trials.json")) as f:
        return json.load(f)["trials"]


def _duplicates(tune: Tune, trials: list[dict]) -> int:
    """Trials with more than one completed run of a step, and completed step
    runs of no trial: a trial (its values) run twice to its end."""
    completed: dict[tuple[str, str], list[str]] = {}
    for run in tune.runs():
        op = run.opref.op_name if run.opref else None
        if op in ("train", "evaluate") and run.status == "completed":
            lr = run.get("flags", {}).get("lr") if op == "train" else None
            key = (
                op,
                str(lr) if op == "train" else run.get("flags")["operation:train"],
            )
            completed.setdefault(key, []).append(run.id)
    twice = {key for key, ids in completed.items() if len(ids) > 1}
    dups = 0
    for trial in trials:
        train = trial["runs"].get("train")
        keys = {("train", str(trial["values"]["lr"])), ("evaluate", train)}
        dups += bool(keys & twice)
    used = {run_id for t in trials for run_id in t["runs"].values()}
    strays = [i for ids in completed.values() for i in ids if i not in used]
    return dups + len(strays)


def _written_aside(run_dir: str) -> list[str]:
    """Files gpkg_ray.files.replaced writes aside, left in the tune run."""
    found = []
    for root, _, files in os.walk(run_dir):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                found.append(os.path.relpath(os.path.join(root, name), run_dir))
    return found


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:80]}"
    except psutil.Error:
        return str(proc.pid)


def _tail(output: str, lines: int = 5) -> str:
    return " | ".join(output.strip().splitlines()[-lines:])


def _print_table(cases: list[Case], trials: int) -> None:
    print()
    print(
        f"{'point':<16}{'kills':>6}{'orphans':>8}{'restarts':>9}{'trials':>7}{'dups':>5}"
        f"{'running':>8}{'procs':>6}{'temp':>5}{'wall s':>8}  result"
    )
    for c in cases:
        print(
            f"{c.point:<16}{c.kills:>6}{c.orphans:>8}{c.restarts:>9}{c.trials:>7}{c.dups:>5}"
            f"{c.running:>8}{len(c.procs):>6}{len(c.temp):>5}{c.seconds:>8.1f}  "
            f"{'OK' if c.ok else 'FAIL'}"
        )
    print()
    for c in cases:
        for problem in c.problems:
            print(f"FAIL {c.point}: {problem}")
    print(f"{sum(c.ok for c in cases)}/{len(cases)} OK ({trials} trials each)")


if __name__ == "__main__":
    sys.exit(main())
