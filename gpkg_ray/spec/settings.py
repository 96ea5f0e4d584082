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

    @classmethod
    def from_flags(cls, flags: dict[str, Any]) -> Settings:
        """Settings from flag values keyed by flag name (`max-trials`); flags that
        are not settings are ignored (a project may define flags of its own)."""
        values = {
            f.name: flags[flag_name(f.name)]
            for f in fields(cls)
            if flags.get(flag_name(f.name)) is not None
        }
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


def flag_name(field_name: str) -> str:
    return field_name.replace("_", "-")


def _check_int(flag: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{flag}={value!r} is not a whole number: set {flag}=N")
    if value < minimum:
        raise SpecError(f"{flag}={value} must be at least {minimum}")


def _check_number(flag: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SpecError(f"{flag}={value!r} must be a number of 0 or more")
