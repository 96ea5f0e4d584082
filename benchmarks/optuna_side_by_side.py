"""gpkg.ray side by side with a plain Optuna script, on a real training.

The workload (benchmarks/digits) trains scikit-learn's MLPClassifier on its
bundled digits data (offline), one `partial_fit` pass per epoch, and reports
the validation accuracy after each epoch. The same TPE search (Optuna's
TPESampler, same seed, same space, same trial count) runs:

    gpkg.ray      `guild run tune search=tpe max-concurrent=2`: each trial a
                  `guild run train` (a fresh Python that imports scikit-learn),
                  its epochs Guild output scalars
    optuna        a plain script, the same training in-process: one process,
                  `study.optimize(n_jobs=2)` (threads); and two processes
                  sharing a journal file storage (each its own sampler seed,
                  seed and seed + 1: with one seed both would propose the same
                  points), whichever is faster counts

Each side is timed whole, from its command to its exit (Python's start, the
imports and Ray's start included). Then with early stopping: gpkg.ray's
`scheduler=asha` (grace-period 1, reduction-factor 3) against Optuna's
SuccessiveHalvingPruner (min-resource 1, reduction-factor 3), both with TPE:
the wall time until each first completed a trial at least as good as the
worse of the two bests (the best both reached), and the epochs each ran.

Targets (issue 22): gpkg.ray's wall time at most 1.15x Optuna's (TPE, no
pruning), for the same best.

    python benchmarks/optuna_side_by_side.py            # 30 trials x 27 epochs
    python benchmarks/optuna_side_by_side.py --quick    # 2 trials x 3 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# One BLAS thread per training, on both sides: two trials run at once on the
# cores there are; set before NumPy's import, inherited by `guild run`.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "digits"
RATIO_TARGET = 1.15
SPACE_HIDDEN = [16, 32, 64, 128, 256]


@dataclass
class Trial:
    value: float | None
    """The last validation accuracy of a completed trial (None otherwise)."""
    ended: float
    """Seconds from the side's launch."""
    epochs: int
    seconds: float
    """From the trial's start to its end."""


@dataclass
class Side:
    name: str
    wall: float
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> float:
        """The best completed trial's accuracy (0 if none completed)."""
        return max((t.value for t in self.trials if t.value is not None), default=0.0)

    @property
    def epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    @property
    def trial_seconds(self) -> float:
        """Mean seconds a trial took, start to end."""
        return sum(t.seconds for t in self.trials) / max(1, len(self.trials))

    def time_to(self, target: float) -> float | None:
        """When it first completed a trial at least `target`."""
        times = [t.ended for t in self.trials if (t.value or 0.0) >= target]
        return min(times) if times else None


def main() -> int:
    args = _parse_args()
    if args.worker:
        return _worker(args)
    trials = args.trials or (2 if args.quick else 30)
    op = "tune-quick" if args.quick else "tune"
    epochs = 3 if args.quick else 27
    ways = ["threads"] if args.quick else ["threads", "processes"]
    print(f"{trials} trials x {epochs} epochs, TPE seed {args.seed}, 2 at a time")
    plain = [_gpkg_ray(op, trials, epochs, args.seed, asha=False)]
    plain += [_optuna(w, trials, epochs, args.seed, prune=False) for w in ways]
    pruned = [_gpkg_ray(op, trials, epochs, args.seed, asha=True)]
    pruned += [_optuna(w, trials, epochs, args.seed, prune=True) for w in ways]
    _print_plain(plain)
    _print_pruned(pruned)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials x 3 epochs")
    parser.add_argument("--trials", type=int, help="trials per search")
    parser.add_argument("--seed", type=int, default=1)
    # The Optuna side's own process (run by this script).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n-jobs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--prune", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


# gpkg.ray


def _gpkg_ray(op: str, trials: int, epochs: int, seed: int, asha: bool) -> Side:
    from guild_home import GuildHome

    flags = [f"max-trials={trials}", "max-concurrent=2", "search=tpe", f"seed={seed}"]
    if asha:
        flags += ["scheduler=asha", "grace-period=1", "reduction-factor=3"]
        flags += [f"max-t={epochs}"]
    with GuildHome() as home:
        launched = time.time()
        wall = home.run(WORKLOAD, op, *flags)
        side = Side("gpkg.ray" + (" asha" if asha else ""), wall)
        for t in home.trials():
            completed = t["status"] == "completed"
            side.trials.append(
                Trial(
                    t["objective"] if completed else None,
                    t["ended"] - launched,
                    _epochs(home.path / "runs" / t["runs"]["train"]),
                    t["ended"] - t["started"],
                )
            )
    return side


def _epochs(run_dir: Path) -> int:
    from gpkg_ray.trial.scalars import ScalarWatcher

    watcher = ScalarWatcher(str(run_dir))
    return sum(1 for tag, _ in watcher.poll(final=True) if tag == "val_acc")


# Optuna


def _optuna(way: str, trials: int, epochs: int, seed: int, prune: bool) -> Side:
    """The plain Optuna script, timed from its command to its exit."""
    with tempfile.TemporaryDirectory(prefix="gpkg-ray-optuna-") as tmp:
        out = Path(tmp) / "trials.jsonl"

        def command(n: int, *more: str) -> list[str]:
            return [
                sys.executable,
                __file__,
                "--worker",
                f"--trials={n}",
                f"--epochs={epochs}",
                f"--out={out}",
                *(["--prune"] if prune else []),
                *more,
            ]

        if way == "threads":
            commands = [command(trials, f"--seed={seed}", "--n-jobs=2")]
        else:
            storage = Path(tmp) / "study.log"
            # Half the trials each: the study has exactly `trials`.
            halves = (trials // 2, trials - trials // 2)
            commands = [
                command(half, f"--seed={seed + i}", f"--storage={storage}")
                for i, half in enumerate(halves)
            ]
        launched = time.time()
        procs = [subprocess.Popen(c, stdin=subprocess.DEVNULL) for c in commands]
        for proc in procs:
            if proc.wait() != 0:
                sys.exit(f"the Optuna script failed: {proc.args}")
        wall = time.time() - launched
        side = Side(f"optuna {way}" + (" sha" if prune else ""), wall)
        for line in out.read_text().splitlines():
            t = json.loads(line)
            side.trials.append(
                Trial(
                    t["value"],
                    t["ended"] - launched,
                    t["epochs"],
                    t["ended"] - t["started"],
                )
            )
    return side


def _worker(args: argparse.Namespace) -> int:
    """The plain Optuna script: the same training (digits/mlp.py) in-process."""
    import threading

    import optuna

    sys.path.insert(0, str(WORKLOAD))
    import mlp

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = mlp.load_split()
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        hidden = trial.suggest_categorical("hidden", SPACE_HIDDEN)
        alpha = trial.suggest_float("alpha", 1e-6, 1e-2, log=True)
        epochs = 0
        started = time.time()

        def report(epoch: int, acc: float) -> bool:
            nonlocal epochs
            epochs += 1
            if args.prune:
                trial.report(acc, epoch)
                if trial.should_prune():
                    _record(args.out, lock, None, epochs, started)
                    raise optuna.TrialPruned()
            return False

        acc = mlp.train(lr, hidden, alpha, args.epochs, 0, report, data)
        _record(args.out, lock, acc, epochs, started)
        return acc

    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        if args.prune
        else optuna.pruners.NopPruner()
    )
    storage = None
    if args.storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(args.storage))
    study = optuna.create_study(
        study_name="digits",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=pruner,
        load_if_exists=True,
    )
    study.optimize(objective, n_trials=args.trials, n_jobs=args.n_jobs)
    return 0


def _record(path: str, lock, value, epochs: int, started: float) -> None:
    line = json.dumps(
        {"value": value, "started": started, "ended": time.time(), "epochs": epochs}
    )
    with lock, open(path, "a") as f:
        f.write(line + "\n")


# Tables


def _print_plain(sides: list[Side]) -> None:
    print()
    print(
        f"{'TPE, no pruning':<24}{'trials':>7}{'epochs':>8}{'wall s':>8}{'best':>8}"
        f"{'trial s':>9}"
    )
    for side in sides:
        _row(side)
    gpkg, optuna_sides = sides[0], sides[1:]
    fastest = min(optuna_sides, key=lambda s: s.wall)
    print()
    print(
        f"gpkg.ray / {fastest.name} wall  {gpkg.wall / fastest.wall:6.2f}"
        f"  (target <= {RATIO_TARGET})"
    )
    print(f"best: gpkg.ray {gpkg.best:.4f}, {fastest.name} {fastest.best:.4f}")


def _print_pruned(sides: list[Side]) -> None:
    target = min(side.best for side in sides)
    print()
    print(
        f"{'TPE + early stopping':<24}{'trials':>7}{'epochs':>8}{'wall s':>8}"
        f"{'best':>8}{'trial s':>9}{'to target s':>13}"
    )
    for side in sides:
        reached = side.time_to(target)
        _row(side, f"{reached:>13.1f}" if reached is not None else f"{'-':>13}")
    gpkg, optuna_sides = sides[0], sides[1:]
    fastest = min(optuna_sides, key=lambda s: s.time_to(target) or float("inf"))
    ratio = (gpkg.time_to(target) or float("nan")) / (
        fastest.time_to(target) or float("nan")
    )
    print()
    print(
        f"to val_acc >= {target:.4f} (the best all reached): "
        f"gpkg.ray asha / {fastest.name} {ratio:6.2f}"
    )


def _row(side: Side, extra: str = "") -> None:
    print(
        f"{side.name:<24}{len(side.trials):>7}{side.epochs:>8}{side.wall:>8.1f}"
        f"{side.best:>8.4f}{side.trial_seconds:>9.2f}{extra}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # guild_home
    sys.exit(main())
