"""Run settings of a tune: the flags of the `tune` operation.

The fields below are the flags' single definition in Python: the tuner's argparse
parser gets its arguments from them (`add_arguments`), so a project op with
`main: gpkg_ray.tuner` and `flags-import: all` gets them from Guild, and the
package's `tune` op in `guild.yml` declares the same flags (a test keeps the two
equal).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from gpkg_ray.errors import SpecError

SEARCH_ALGORITHMS = ("random", "grid", "tpe")
SCHEDULERS = ("fifo", "asha", "hyperband", "median")

# Schedulers Ray offers that pause trials and restart them from a checkpoint:
# a trial's Guild runs cannot be paused and resumed, so these are refused.
REFUSED_SCHEDULERS = {
    "pbt": "PBT restarts trials from other trials' checkpoints",
    "pb2": "PB2 restarts trials from other trials' checkpoints",
    "bohb": "BOHB pauses trials and resumes them from checkpoints",
}


def _flag(default: Any, help: str, type: Any = str, choices=None) -> Any:
    return field(
        default=default, metadata={"help": help, "type": type, "choices": choices}
    )


@dataclass(frozen=True)
class Settings:
    cluster: str = _flag(
        "local", "Ray cluster to run trials on (`local` or a ray-cluster remote)"
    )
    max_trials: int = _flag(20, "Number of trials to run", int)
    max_concurrent: int = _flag(
        0, "Trials run at once (0 = as many as the cluster's CPUs allow)", int
    )
    search: str = _flag("random", "Search algorithm", str, SEARCH_ALGORITHMS)
    seed: int | None = _flag(None, "Random seed of the search (blank = random)", int)
    cpus: float = _flag(1.0, "CPUs reserved for each trial", float)
    gpus: float = _flag(0.0, "GPUs reserved for each trial", float)
    scheduler: str = _flag(
        "fifo", "Trial scheduler: fifo runs every trial to its end", str, SCHEDULERS
    )
    grace_period: int = _flag(
        1, "Steps a trial runs before a scheduler may stop it", int
    )
    reduction_factor: float = _flag(
        3.0, "ASHA/hyperband keep the best 1/N of trials at each rung", float
    )
    max_t: int = _flag(
        100,
        "ASHA/hyperband: the most steps a trial runs (places the rungs; a "
        "trial is not cut there)",
        int,
    )
    max_time: float = _flag(0.0, "Wall seconds a trial may run (0 = no limit)", float)
    max_memory: float = _flag(
        0.0, "MB of memory a step's processes may use (0 = no limit)", float
    )
    limit_penalty: float | None = _flag(
        None,
        "Objective of a trial stopped by max-time or max-memory (blank = the "
        "trial fails)",
        float,
    )
    time_budget: float = _flag(
        0.0, "Wall seconds the whole search may run (0 = no limit)", float
    )
    max_failures: int = _flag(
        0, "Times a failed trial is run again before it counts as failed", int
    )
    warm_start: str = _flag(
        "no",
        "Earlier trials told to the searcher first: no, operation (every other "
        "run of this tune op) or run ids, comma-separated",
    )

    @classmethod
    def from_flags(cls, flags: dict[str, Any]) -> Settings:
        """Settings from flag values keyed by flag name (`max-trials`); flags that
        are not settings are ignored (a project may define flags of its own)."""
        values = {
            f.name: flags[flag_name(f.name)]
            for f in fields(cls)
            if flags.get(flag_name(f.name)) is not None
        }
        if "warm_start" in values:
            values["warm_start"] = _warm_start_value(values["warm_start"])
        settings = cls(**values)
        settings.validate()
        return settings

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Settings from arguments parsed by a parser set up with add_arguments."""
        return cls.from_flags({flag_name(k): v for k, v in vars(args).items()})

    def validate(self) -> None:
        _check_int("max-trials", self.max_trials, minimum=1)
        _check_int("max-concurrent", self.max_concurrent, minimum=0)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        _check_number("cpus", self.cpus)
        _check_number("gpus", self.gpus)
        if self.cpus == 0 and self.gpus == 0:
            raise SpecError("cpus=0 and gpus=0: a trial must reserve some resource")
        self._validate_scheduler()
        _check_number("max-time", self.max_time)
        _check_number("max-memory", self.max_memory)
        _check_number("time-budget", self.time_budget)
        _check_int("max-failures", self.max_failures, minimum=0)
        self._validate_warm_start()
        if self.limit_penalty is not None and not _is_number(self.limit_penalty):
            raise SpecError(
                f"limit-penalty={self.limit_penalty!r} must be a number, or blank "
                "for trials over a limit to fail"
            )
        if self.search not in SEARCH_ALGORITHMS:
            raise SpecError(
                f"unknown search '{self.search}': use one of "
                f"{', '.join(SEARCH_ALGORITHMS)}"
            )
        if not isinstance(self.cluster, str) or not self.cluster:
            raise SpecError(
                "cluster must name a ray-cluster remote, or be 'local' for an "
                "embedded Ray"
            )

    @property
    def warm_start_off(self) -> bool:
        return self.warm_start.strip() in ("", "no")

    def _validate_warm_start(self) -> None:
        if self.warm_start_off or self.search == "tpe":
            return
        raise SpecError(
            f"warm-start={self.warm_start} needs search=tpe: search={self.search} "
            "does not learn from earlier trials"
        )

    def _validate_scheduler(self) -> None:
        if self.scheduler in REFUSED_SCHEDULERS:
            raise SpecError(
                f"scheduler={self.scheduler} is not offered: "
                f"{REFUSED_SCHEDULERS[self.scheduler]}, and a trial's Guild runs "
                f"cannot be paused and resumed; use one of {', '.join(SCHEDULERS)}"
            )
        if self.scheduler not in SCHEDULERS:
            raise SpecError(
                f"unknown scheduler '{self.scheduler}': use one of "
                f"{', '.join(SCHEDULERS)}"
            )
        _check_int("grace-period", self.grace_period, minimum=1)
        _check_int("max-t", self.max_t, minimum=1)
        if self.max_t < self.grace_period:
            raise SpecError(
                f"max-t={self.max_t} is less than grace-period={self.grace_period}: "
                "no trial could reach a rung"
            )
        if not _is_number(self.reduction_factor) or self.reduction_factor <= 1:
            raise SpecError(
                f"reduction-factor={self.reduction_factor!r} must be a number "
                "greater than 1"
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds a `--flag-name` argument for each setting."""
    for f in fields(Settings):
        default = None if f.default is MISSING else f.default
        # No `choices` here: a bad value gets the tuner's own one-line error.
        parser.add_argument(
            f"--{flag_name(f.name)}",
            default=default,
            type=f.metadata["type"],
            help=f.metadata["help"],
        )


def _warm_start_value(value: Any) -> str:
    # Guild decodes `warm-start=no` to False, `yes` to True and `1234` to 1234.
    if isinstance(value, bool):
        return "operation" if value else "no"
    return str(value)


def flag_name(field_name: str) -> str:
    return field_name.replace("_", "-")


def _check_int(flag: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{flag}={value!r} is not a whole number: set {flag}=N")
    if value < minimum:
        raise SpecError(f"{flag}={value} must be at least {minimum}")


def _check_number(flag: str, value: Any) -> None:
    if not _is_number(value) or value < 0:
        raise SpecError(f"{flag}={value!r} must be a number of 0 or more")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
