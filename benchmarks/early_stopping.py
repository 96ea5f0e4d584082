"""Early stopping: the same search with scheduler=fifo and scheduler=asha.

Runs `guild run tune` twice on a bundled workload: the synthetic learning
curves of benchmarks/learning_curve, or (`--workload digits`) a real training,
scikit-learn's MLP on its bundled digits data (benchmarks/digits), with the
same seed, so both runs sample the same trials, and prints for each: trials
completed and stopped, epochs run (the
`val_acc` values every train run logged), wall time and best objective; then
ASHA's figures as ratios of FIFO's, against the targets: ASHA's best within 1%
of FIFO's, at most 40% of FIFO's epochs.

    python benchmarks/early_stopping.py            # 32 trials x 27 epochs
    python benchmarks/early_stopping.py --quick    # 8 trials x 9 epochs
    python benchmarks/early_stopping.py --workload digits   # 32 x 27, real
    python benchmarks/early_stopping.py --workload digits --quick  # 8 x 3
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from guild_home import GuildHome

from gpkg_ray.trial.scalars import ScalarWatcher

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    # name: (its dir, epochs of a trial in the full run and in --quick)
    "synthetic": (HERE / "learning_curve", 27, 9),
    "digits": (HERE / "digits", 27, 3),
}
BEST_GAP_TARGET = 0.01
EPOCHS_RATIO_TARGET = 0.40


@dataclass
class Figures:
    scheduler: str
    trials: int
    completed: int
    stopped: int
    epochs: int
    wall_s: float
    best: float


def main() -> int:
    args = _parse_args()
    op = "tune-quick" if args.quick else "tune"
    trials = args.trials or (8 if args.quick else 32)
    workload, full_epochs, quick_epochs = WORKLOADS[args.workload]
    flags = [
        f"max-trials={trials}",
        f"seed={args.seed}",
        f"max-concurrent={args.concurrency}",
        "grace-period=1",
        "reduction-factor=3",
        f"max-t={quick_epochs if args.quick else full_epochs}",
    ]
    print(f"{args.workload} {op}: {' '.join(flags)}", flush=True)
    results = [
        _run(workload, op, [f"scheduler={name}", *flags]) for name in ("fifo", "asha")
    ]
    _print_table(results)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="8 trials x 9 (digits: 3) epochs"
    )
    parser.add_argument("--trials", type=int, help="trials per search")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="synthetic",
        help="learning_curve/ (synthetic) or digits/ (scikit-learn's MLP)",
    )
    return parser.parse_args()


def _run(workload: Path, op: str, flags: list[str]) -> Figures:
    scheduler = flags[0].partition("=")[2]
    with GuildHome() as home:
        wall = home.run(workload, op, *flags)
        return _figures(scheduler, home, wall)


def _figures(scheduler: str, home: GuildHome, wall: float) -> Figures:
    trials = home.trials()
    completed = [t for t in trials if t["status"] == "completed"]
    epochs = sum(
        _count_values(home.path / "runs" / t["runs"]["train"], "val_acc")
        for t in trials
    )
    return Figures(
        scheduler=scheduler,
        trials=len(trials),
        completed=len(completed),
        stopped=sum(1 for t in trials if t["status"] == "stopped"),
        epochs=epochs,
        wall_s=wall,
        best=max(t["objective"] for t in completed),
    )


def _count_values(run_dir: Path, tag: str) -> int:
    return sum(1 for t, _ in ScalarWatcher(str(run_dir)).poll(final=True) if t == tag)


def _print_table(results: list[Figures]) -> None:
    print()
    print(
        f"{'scheduler':<10}{'trials':>7}{'done':>6}{'stopped':>8}"
        f"{'epochs':>8}{'wall s':>8}{'best':>9}"
    )
    for r in results:
        print(
            f"{r.scheduler:<10}{r.trials:>7}{r.completed:>6}{r.stopped:>8}"
            f"{r.epochs:>8}{r.wall_s:>8.1f}{r.best:>9.4f}"
        )
    fifo, asha = results
    gap = (fifo.best - asha.best) / abs(fifo.best)
    epochs_ratio = asha.epochs / fifo.epochs
    print()
    print(f"asha/fifo epochs  {epochs_ratio:6.2f}  (target <= {EPOCHS_RATIO_TARGET})")
    print(f"asha/fifo wall    {asha.wall_s / fifo.wall_s:6.2f}")
    print(f"best gap          {gap:6.2%}  (target <= {BEST_GAP_TARGET:.0%})")
    met = epochs_ratio <= EPOCHS_RATIO_TARGET and gap <= BEST_GAP_TARGET
    print(f"targets met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
