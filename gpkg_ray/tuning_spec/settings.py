"""Run settings of a tune: the flags of the `tune` operation.

The fields below are the flags' single definition: the package's `tune` op in
the installed `guild.yml` gets its `flags:` from them at build time (setup.py
calls `guild_flagdefs`), and the tuner reads the run's flag values back into
them (`Settings.from_flags`), as the Guild plugin does before the run exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from gpkg_ray.errors import SpecError

SEARCH_ALGORITHMS = ("random", "grid", "tpe", "gp", "cmaes", "qmc", "nsga2")
LEARNING_SEARCHES = ("tpe", "gp", "cmaes", "nsga2")
"""Searches that learn from trials that ended (and so from earlier ones)."""
NO_LIMIT = " (0 = no limit)"
SCHEDULERS = ("fifo", "asha", "hyperband", "median")

# Schedulers Ray offers that pause trials and restart them from a checkpoint:
# a trial's Guild runs cannot be paused and resumed, so these are refused.
REFUSED_SCHEDULERS = {
    "pbt": "PBT restarts trials from other trials' checkpoints",
    "pb2": "PB2 restarts trials from other trials' checkpoints",
    "bohb": "BOHB pauses trials and resumes them from checkpoints",
}


def _flag(
    default: Any,
    help: str,
    guild_type: str | None = None,
    minimum: float | None = None,
    null_label: str | None = None,
) -> Any:
    """A setting and its Guild flag: `guild_type` is the flag's `type:` (none
    lets Guild decode the value), `minimum` its `min:`, `null_label` what
    Guild shows for a blank value. No `choices:`: Guild's own check of them
    prints a multi-line error; the tuner's check prints one line."""
    return field(
        default=default,
        metadata={
            "help": " ".join(help.split()),
            "type": guild_type,
            "min": minimum,
            "null-label": null_label,
        },
    )


@dataclass(frozen=True)
class Settings:
    cluster: str = _flag(
        "local", "Ray cluster to run trials on (`local` or a ray-cluster remote)"
    )
    max_trials: int = _flag(20, "Number of trials to run", "int", 1)
    max_concurrent: int = _flag(
        0, "Trials run at once (0 = as many as the cluster's CPUs allow)", "int", 0
    )
    search: str = _flag(
        "random",
        """Search algorithm: random (random sampling), grid (every combination
        of the listed values), or Optuna's tpe (Tree-structured Parzen
        Estimator), gp (Bayesian optimization, needs PyTorch), cmaes (CMA-ES,
        ranges only), qmc (quasi-random) or nsga2 (evolutionary)""",
    )
    seed: int | None = _flag(
        None, "Random seed of the search (blank = random)", "int", None, "random"
    )
    cpus: float = _flag(1.0, "CPUs reserved for each trial", "float", 0)
    gpus: float = _flag(0.0, "GPUs reserved for each trial", "float", 0)
    scheduler: str = _flag(
        "fifo",
        """Trial scheduler: fifo runs every trial to its end; asha, hyperband
        and median stop trials early on config `scheduler-metric` (default: the
        objective)""",
    )
    grace_period: int = _flag(
        1, "Steps a trial runs before a scheduler may stop it", "int", 1
    )
    reduction_factor: float = _flag(
        3.0, "ASHA/hyperband keep the best 1/N of trials at each rung", "float"
    )
    max_t: int = _flag(
        100,
        """ASHA/hyperband: the most steps a trial runs (places the rungs; a
        trial is not cut there)""",
        "int",
        1,
    )
    max_time: float = _flag(
        0.0, "Wall seconds a trial may run (0 = no limit)", "float", 0
    )
    max_memory: float = _flag(
        0.0, "MB of memory a step's processes may use (0 = no limit)", "float", 0
    )
    limit_penalty: float | None = _flag(
        None,
        """Objective of a trial stopped by max-time or max-memory (blank = the
        trial fails)""",
        "float",
        None,
        "fail",
    )
    time_budget: float = _flag(
        0.0, "Wall seconds the whole search may run (0 = no limit)", "float", 0
    )
    max_failures: int = _flag(
        0, "Times a failed trial is run again before it counts as failed", "int", 0
    )
    fail_fast: int = _flag(
        3,
        """Stop the search when the first N trials to end all failed with the
        same error (0 = never)""",
        "int",
        0,
    )
    report_every: float = _flag(
        30.0,
        """Seconds between writes of report/index.html while the tune runs (it
        reloads itself in a browser; 0 = the report only at the end)""",
        "float",
        0,
    )
    warm_start: str = _flag(
        "no",
        """Earlier trials told to the searcher first: no, operation (every other
        run of this tune op) or run ids, comma-separated""",
        "string",
    )
    space: str | None = _flag(
        None,
        """Space entries for this tune over config `space`, as one string of
        KEY=VALUE items with values as in the config, e.g. 'lr=0.1
        train:epochs=3 dropout=uniform[0:0.3]' (blank = the config's space)""",
        "string",
        None,
        "from config",
    )

    dry_run: bool = _flag(
        False,
        """Print what the tune would do (space, its first trials, resources,
        time from earlier tunes) and run no trial""",
        "boolean",
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
        _check_number("max-time", self.max_time, NO_LIMIT)
        _check_number("max-memory", self.max_memory, NO_LIMIT)
        _check_number("time-budget", self.time_budget, NO_LIMIT)
        _check_int("max-failures", self.max_failures, minimum=0)
        _check_int("fail-fast", self.fail_fast, minimum=0)
        _check_number("report-every", self.report_every, " (0 = only at the end)")
        self._validate_warm_start()
        if self.limit_penalty is not None and not _is_number(self.limit_penalty):
            raise SpecError(
                f"limit-penalty={self.limit_penalty!r} must be a finite number, or "
                "blank for trials over a limit to fail"
            )
        if self.search not in SEARCH_ALGORITHMS:
            raise SpecError(
                f"unknown search '{self.search}': use one of "
                f"{', '.join(SEARCH_ALGORITHMS)}"
            )
        if self.search == "gp":
            _check_torch()
        if not isinstance(self.cluster, str) or not self.cluster:
            raise SpecError(
                "cluster must name a ray-cluster remote, or be 'local' for an "
                "embedded Ray"
            )

    @property
    def warm_start_off(self) -> bool:
        return self.warm_start.strip() in ("", "no")

    def _validate_warm_start(self) -> None:
        if self.warm_start_off or self.search in LEARNING_SEARCHES:
            return
        raise SpecError(
            f"warm-start={self.warm_start} needs search={'|'.join(LEARNING_SEARCHES)}: "
            f"search={self.search} does not learn from earlier trials"
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
                f"reduction-factor={self.reduction_factor!r} must be a finite "
                "number greater than 1"
            )


BATCH_SETTINGS = ("max_trials", "seed", "search", "space", "warm_start", "dry_run")
"""Settings that the optimizer ops (`gpkg.ray/tpe`, ...) take from Guild's
batch instead of a flag: `--max-trials`, `--random-seed`, the op's name and
the proto's flags; warm start and dry run are the tune op's only."""


def guild_flagdefs(batch: bool = False) -> dict[str, dict[str, Any]]:
    """The `flags:` of the package's `tune` op in guild.yml, one per setting;
    with `batch`, those of its optimizer ops (less BATCH_SETTINGS)."""
    flagdefs = {}
    for f in fields(Settings):
        if batch and f.name in BATCH_SETTINGS:
            continue
        flagdef: dict[str, Any] = {"description": f.metadata["help"]}
        for key in ("type", "min", "null-label"):
            if f.metadata[key] is not None:
                flagdef[key] = f.metadata[key]
        # Guild shows a float flag's default as written: 1, not 1.0.
        whole = isinstance(f.default, float) and f.default.is_integer()
        flagdef["default"] = int(f.default) if whole else f.default
        flagdefs[flag_name(f.name)] = flagdef
    return flagdefs


def _check_torch() -> None:
    """Optuna's GP sampler runs on PyTorch, which gpkg.ray does not install:
    with torch importable, every Guild run of a step imports it (Guild's
    summary plugins load tensorboardX), about 2 s and 130 MB a run."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise SpecError(
            "search=gp needs PyTorch (Optuna's GP sampler runs on it): "
            "pip install torch, or use search=tpe"
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


def _check_number(flag: str, value: Any, hint: str = "") -> None:
    if not _is_number(value) or value < 0:
        raise SpecError(f"{flag}={value!r} must be a finite number of 0 or more{hint}")


def _is_number(value: Any) -> bool:
    """A finite int or float: Guild's float flags take `nan` and `inf` (and
    its `min:` check lets them by), which would pass every comparison with a
    bound or fail none, and then fail in Ray (ASHA asserts) or never fire."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)
