"""Scale: a tune of many trivial trials, two at a time.

One `guild run tune-scale` (benchmarks/trivial: one `train` step that prints a
scalar and does no work; search=random, so the searcher's own cost does not
grow with the trials) of N + EXTRA trials, killed with SIGKILL (its whole
session) once N trials have ended, then `guild run --restart` to the end. While
it runs, the driver (the tuner process, where Ray Tune's controller runs too)
and Ray's processes are sampled, and the files of the tune run are watched.
It prints:

    cost per trial     wall seconds per trial ended at 10, 100, 1,000 trials
                       (over the window of trials before each: the slope of
                       trial ends, so Ray's start is not in it), the driver's
                       CPU seconds and bytes written (`wchar`) per trial there
    memory             the driver's RSS (and GCS's, raylet's) at each point,
                       and its growth per 100 trials (a line fit)
    files              each file of the tune run the driver writes, how (seen
                       as appended, or replaced whole, at each sample) and its
                       size at the end: what grows per trial and is written
                       whole is what the per-trial bytes show
    restart            `guild run --restart` of the killed tune: launch to
                       Ray up (the journal's Ray line), Ray up to the next
                       trial's start (target <= 10 s), the last trial's end
                       to the run's exit (results and report of all trials)
    compare            `guild compare -Fo trial -t` over the trial records

Targets (issue 22): cost per trial at 1,000 within 20% of that at 10; Ray up to
the next trial within 10 s.

    python benchmarks/scale.py              # 1,000 (+20) trials, ~15 min
    python benchmarks/scale.py --quick      # 6 (+4) trials
    python benchmarks/scale.py --trials 300 --points 10 100 300
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
from dataclasses import dataclass, field
from pathlib import Path

import psutil

WORKLOAD = Path(__file__).resolve().parent / "trivial"
GUILD = str(Path(sys.executable).parent / "guild")
FLAT_TARGET = 1.2
RESTART_TARGET = 10.0
RUN_TIMEOUT = 3600


@dataclass
class Sample:
    t: float
    ended: int
    driver_rss: int = 0
    driver_cpu: float = 0.0
    driver_wchar: int = 0
    ray_rss: dict[str, int] = field(default_factory=dict)


@dataclass
class FileLog:
    """What was seen of one file of the tune run across samples."""

    replaced: int = 0
    """Times it was seen with a new inode (written aside, then put in place)."""
    appended: int = 0
    """Times it was seen grown in place."""
    rewritten: int = 0
    """Times it was seen changed in place but not grown (rewritten in place)."""
    size: int = 0
    inode: int = 0
    mtime: int = 0


def main() -> int:
    args = _parse_args()
    n = args.trials or (6 if args.quick else 1000)
    points = args.points or ([3, 6] if args.quick else [10, 100, 1000])
    points = [p for p in points if p <= n]
    extra = 4 if args.quick else 20
    # Short: Ray puts its sockets in a dir under TMPDIR (107 bytes at most).
    base = Path(tempfile.mkdtemp(prefix="sc-"))
    bench = ScaleBench(base, interval=0.25 if args.quick else 1.0)
    try:
        first = bench.tune_until_killed(n, extra)
        restart = bench.restart()
        compare = bench.compare()
        _print(n, extra, points, bench, first, restart, compare)
    finally:
        leftovers = bench.session_processes()
        for proc in leftovers:  # by pid: a tune the script started
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if leftovers:
            print(f"processes left and killed: {len(leftovers)}", file=sys.stderr)
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 (+4) trials")
    parser.add_argument("--trials", type=int, help="trials before the kill")
    parser.add_argument("--points", type=int, nargs="+", help="where to measure")
    parser.add_argument("--keep", action="store_true", help="keep the Guild home")
    return parser.parse_args()


class ScaleBench:
    """A Guild home and temp dir of its own; the tune's sessions, sampled."""

    def __init__(self, base: Path, interval: float):
        self.base = base
        self.interval = interval
        self.guild_home = base / "guild-home"
        self.tmp = base / "t"
        self.guild_home.mkdir()
        self.tmp.mkdir()
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
        self.sessions: list[int] = []
        self.samples: list[Sample] = []
        self.files: dict[str, FileLog] = {}
        self.run_dir: Path | None = None

    # The first attempt, killed

    def tune_until_killed(self, n: int, extra: int) -> dict:
        """`guild run tune-scale` of n + extra trials, killed once n have
        ended; when it launched and was killed."""
        args = [
            "tune-scale",
            f"max-trials={n + extra}",
            "max-concurrent=2",
            "search=random",
            "seed=1",
        ]
        proc, launched = self._launch(args, "first")
        watch = _Journal(self)
        driver = None
        next_sample = 0.0
        while True:
            if proc.poll() is not None:
                sys.exit(f"the tune ended before {n} trials: see {self.base}")
            ended = watch.ended()
            if ended >= n or time.monotonic() >= next_sample:
                driver = driver or self._driver()
                self._sample(driver, ended)
                next_sample = time.monotonic() + self.interval
            if ended >= n:
                break
            time.sleep(0.05)  # the kill comes within a trial or so of the nth
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"launched": launched, "killed": time.time(), "ended": ended}

    # The restart

    def restart(self) -> dict:
        """`guild run --restart` of the killed tune, to its end: launch, Ray
        up, the next trial's start, the last trial's end, exit."""
        assert self.run_dir is not None
        journal = self.run_dir / "journal.jsonl"
        offset = journal.stat().st_size
        proc, launched = self._launch(["--restart", self.run_dir.name], "restart")
        ray_up = first_start = None
        while proc.poll() is None and first_start is None:
            entries, offset = _new_lines(journal, offset)
            for entry in entries:
                if entry.get("event") == "ray" and entry.get("processes"):
                    ray_up = ray_up or time.time()
                elif entry.get("event") == "trial" and ray_up is not None:
                    # When it was written: a trial the kill interrupted keeps
                    # its first `started` when it runs again.
                    first_start = time.time()
            time.sleep(0.02)
        status = proc.wait(RUN_TIMEOUT)
        exited = time.time()
        if status != 0:
            sys.exit(f"the restart exited {status}: see {self.base}")
        trials = json.loads((self.run_dir / "trials.json").read_text())["trials"]
        if ray_up is None or first_start is None:
            sys.exit("the restart logged no Ray start or no trial start")
        return {
            "launched": launched,
            "ray_up": ray_up,
            "first_start": first_start,
            "last_end": max(t["ended"] for t in trials),
            "exited": exited,
            "trials": len(trials),
            "completed": sum(1 for t in trials if t["status"] == "completed"),
        }

    def compare(self) -> dict:
        """`guild compare -Fo trial -t` (a row per trial record): seconds, rows."""
        started = time.monotonic()
        result = subprocess.run(
            [GUILD, "compare", "-Fo", "trial", "-t"],
            cwd=WORKLOAD,
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        seconds = time.monotonic() - started
        if result.returncode != 0:
            sys.exit(f"guild compare failed: {result.stderr}")
        rows = len(result.stdout.splitlines()) - 1  # less the header
        return {"seconds": seconds, "rows": rows}

    # Processes and samples

    def _launch(self, args: list[str], name: str) -> tuple[subprocess.Popen, float]:
        out = open(self.base / f"output-{name}.txt", "w")  # noqa: SIM115
        launched = time.time()
        proc = subprocess.Popen(
            [GUILD, "run", "-y", *args],
            cwd=WORKLOAD,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.sessions.append(proc.pid)
        return proc, launched

    def session_processes(self) -> list[psutil.Process]:
        found = []
        sessions = set(self.sessions)
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(proc.pid) in sessions and proc.status() != "zombie":
                    found.append(proc)
        return found

    def _driver(self) -> psutil.Process | None:
        for proc in self.session_processes():
            with contextlib.suppress(psutil.Error):
                if "gpkg_ray.tuner" in proc.cmdline():
                    return proc
        return None

    def tune_run_dir(self) -> Path | None:
        if self.run_dir is None:
            found = list((self.guild_home / "runs").glob("*/journal.jsonl"))
            if found:
                self.run_dir = found[0].parent
        return self.run_dir

    def _sample(self, driver: psutil.Process | None, ended: int) -> None:
        sample = Sample(time.time(), ended)
        if driver is not None:
            with contextlib.suppress(psutil.Error), driver.oneshot():
                sample.driver_rss = driver.memory_info().rss
                cpu = driver.cpu_times()
                sample.driver_cpu = cpu.user + cpu.system
                sample.driver_wchar = driver.io_counters().write_chars
            for proc in self.session_processes():
                with contextlib.suppress(psutil.Error):
                    name = proc.name()
                    if name in ("gcs_server", "raylet"):
                        sample.ray_rss[name] = proc.memory_info().rss
        self.samples.append(sample)
        self._watch_files()

    def _watch_files(self) -> None:
        """Each file of the tune run but Ray's per-trial dirs (each a trial's
        own, written once) and Guild's: how it changed since the last look."""
        run_dir = self.tune_run_dir()
        if run_dir is None:
            return
        for path in _run_files(run_dir):
            try:
                st = path.stat()
            except OSError:
                continue
            key = str(path.relative_to(run_dir))
            log = self.files.get(key)
            if log is None:
                self.files[key] = FileLog(
                    size=st.st_size, inode=st.st_ino, mtime=st.st_mtime_ns
                )
                continue
            if st.st_ino != log.inode:
                log.replaced += 1
            elif st.st_mtime_ns != log.mtime:
                if st.st_size > log.size:
                    log.appended += 1
                else:
                    log.rewritten += 1
            log.size, log.inode, log.mtime = st.st_size, st.st_ino, st.st_mtime_ns


def _run_files(run_dir: Path) -> list[Path]:
    """The tune run's own files, and those of Ray's storage but its per-trial
    dirs (`ray/search/<trial>/`: a trial's own, written as it runs)."""
    files = [p for p in run_dir.iterdir() if p.is_file()]
    ray = run_dir / "ray"
    if ray.is_dir():
        files += [p for p in ray.iterdir() if p.is_file()]
        for search in ray.iterdir():
            if search.is_dir():
                files += [p for p in search.iterdir() if p.is_file()]
    return files


class _Journal:
    """Counts the trials that have ended, reading the journal as it grows."""

    def __init__(self, bench: ScaleBench):
        self.bench = bench
        self.offset = 0
        self.ended_numbers: set[int] = set()
        self._partial = b""

    def ended(self) -> int:
        run_dir = self.bench.tune_run_dir()
        if run_dir is None:
            return 0
        with open(run_dir / "journal.jsonl", "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "trial" and entry["outcome"]["ended"]:
                    self.ended_numbers.add(entry["outcome"]["trial"])
        return len(self.ended_numbers)


def _new_lines(journal: Path, offset: int) -> tuple[list[dict], int]:
    """The whole lines of the journal after `offset`, and the offset after them."""
    with open(journal, "rb") as f:
        f.seek(offset)
        data = f.read()
    *lines, _ = data.split(b"\n")
    entries = []
    for line in lines:
        offset += len(line) + 1
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries, offset


# Figures


def _at(samples: list[Sample], ended: int) -> Sample:
    """The first sample with at least `ended` trials ended."""
    return next(s for s in samples if s.ended >= ended)


def _window(point: int) -> int:
    """Trials before `point` its cost is measured over: a tenth (at least 4),
    so a point's figure is not one trial's noise."""
    return max(4, point // 10)


def _point_row(samples: list[Sample], ends: list[float], point: int) -> dict:
    lo = max(1, point - _window(point))
    a, b = _at(samples, lo), _at(samples, point)
    trials = max(1, b.ended - a.ended)
    return {
        "window": (lo, point),
        "wall": (ends[point - 1] - ends[lo - 1]) / (point - lo),
        "cpu": (b.driver_cpu - a.driver_cpu) / trials,
        "wchar": (b.driver_wchar - a.driver_wchar) / trials,
        "rss": b.driver_rss,
        "ray": b.ray_rss,
    }


def _growth_per_100(samples: list[Sample], key) -> float | None:
    """Least-squares slope of `key(sample)` over trials ended, per 100 trials,
    from the first tenth of the trials on (imports and caches warm by then)."""
    last = samples[-1].ended
    pts = [(s.ended, key(s)) for s in samples if s.ended >= last / 10 and key(s)]
    if len(pts) < 3 or pts[-1][0] == pts[0][0]:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    return sxy / sxx * 100 if sxx else None


def _trial_ends(run_dir: Path, n: int) -> list[float]:
    """When each of the first attempt's first n trials ended, in order."""
    ends = []
    for line in (run_dir / "journal.jsonl").read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "trial" and entry["outcome"]["ended"]:
                ends.append(entry["outcome"]["ended"])
    return sorted(ends)[:n]


def _curve(ends: list[float]) -> str:
    """Seconds per trial over each tenth of the trials (their ends' slope)."""
    step = max(2, len(ends) // 10)
    slopes = [
        (ends[i + step - 1] - ends[i]) / (step - 1)
        for i in range(0, len(ends) - step + 1, step)
    ]
    return " ".join(f"{s:.3f}" for s in slopes)


def _print(n, extra, points, bench, first, restart, compare) -> None:
    mb = 1024 * 1024
    samples = bench.samples
    ends = _trial_ends(bench.run_dir, n)
    print()
    print(
        f"scale: {n} + {extra} one-step trivial trials, 2 at a time, "
        f"search=random; killed after {first['ended']}, then restarted"
    )
    print()
    print(
        f"{'trials':>7}{'window':>12}{'s/trial':>9}{'driver CPU s':>14}"
        f"{'driver MB':>11}{'writes KB/trial':>17}{'gcs MB':>8}{'raylet MB':>11}"
    )
    rows = {p: _point_row(samples, ends, p) for p in points}
    for point, row in rows.items():
        lo, hi = row["window"]
        print(
            f"{point:>7}{f'{lo}-{hi}':>12}{row['wall']:>9.3f}{row['cpu']:>14.3f}"
            f"{row['rss'] / mb:>11.0f}{row['wchar'] / 1024:>17.1f}"
            f"{row['ray'].get('gcs_server', 0) / mb:>8.0f}"
            f"{row['ray'].get('raylet', 0) / mb:>11.0f}"
        )
    lo, hi = rows[points[0]], rows[points[-1]]
    print()
    print(f"curve, s/trial by tenth of the {n} trials: {_curve(ends)}")
    print(
        f"cost per trial at {points[-1]} / at {points[0]}: "
        f"{hi['wall'] / lo['wall']:.2f} (target <= {FLAT_TARGET})"
    )
    for name, key in (
        ("driver RSS", lambda s: s.driver_rss),
        ("gcs_server RSS", lambda s: s.ray_rss.get("gcs_server", 0)),
        ("raylet RSS", lambda s: s.ray_rss.get("raylet", 0)),
    ):
        slope = _growth_per_100(samples, key)
        text = "-" if slope is None else f"{slope / mb:+.1f} MB"
        print(f"{name} growth per 100 trials: {text}")
    print()
    print(f"{'file of the tune run':<44}{'replaced':>9}{'appended':>9}{'KB':>9}")
    for name, log in sorted(bench.files.items()):
        if log.replaced or log.appended or log.rewritten:
            print(
                f"{name[:43]:<44}{log.replaced + log.rewritten:>9}"
                f"{log.appended:>9}{log.size / 1024:>9.1f}"
            )
    print(f"(seen every {bench.interval:g} s: a file changed twice between looks")
    print(" counts once; trials.json, trials.csv and the report are written at")
    print(" the end only)")
    print()
    up = restart["ray_up"] - restart["launched"]
    to_trial = restart["first_start"] - restart["ray_up"]
    print(f"restart ({first['ended']} trials ended before the kill)")
    print(f"  launch to Ray up                {up:8.2f} s")
    print(
        f"  Ray up to the next trial start  {to_trial:8.2f} s"
        f"  (target <= {RESTART_TARGET:g})"
    )
    print(
        f"  last trial end to exit          "
        f"{restart['exited'] - restart['last_end']:8.2f} s"
        f"  (trials.json, .csv, report of {restart['trials']} trials)"
    )
    print(
        f"  trials in trials.json           {restart['trials']:8d}"
        f"  ({restart['completed']} completed)"
    )
    print()
    print(
        f"guild compare -Fo trial -t      {compare['seconds']:8.2f} s"
        f"  ({compare['rows']} rows)"
    )


if __name__ == "__main__":
    sys.exit(main())
