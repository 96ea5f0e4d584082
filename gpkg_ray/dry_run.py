"""`dry-run=yes`: what a tune would do, printed; no Ray, no trial run.

    Dry run: nothing runs.
    Tuning train, evaluate: max acc_val
    Search space of each trial:
      lr: loguniform[0.001:0.1]
      batch-size: [16, 32, 64]
    Search: tpe, seed 7 (random: give seed=7 to run these trials), 20 trials
    First trials it would start (later ones depend on the results):
      1: lr=0.0123 batch-size=32
      ...
    Each trial: 1 CPUs, 0 GPUs; 2 at once (this machine's 2 CPUs)
    Time: about 0:48 (mean trial 4.1 s over 12 trials of 2 earlier tunes of tune)

The first trials are the seeded searcher's own: the searcher is built as the
tune builds it and asked for them (a model-based one's first trials do not
depend on results: TPE and GP start with 10 random ones, NSGA-II with a random
generation, CMA-ES with its first one).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from typing import Any

from gpkg_ray.tuning_spec import TuneSpec
from gpkg_ray.tuning_spec.settings import LEARNING_SEARCHES

FIRST_TRIALS = 5
"""How many of its first trials a dry run shows."""


def dry_run_lines(
    checked, seed: int | None, earlier: list, op: str, cpus_here: int | None = None
) -> list[str]:
    """What the tune of `checked` (a CheckedTune) of op `op` would do.
    `seed`: the seed flag (None: one is drawn, and shown); `earlier`: trials
    of earlier tunes of the same op (TrialOutcome), for the time."""
    spec: TuneSpec = checked.spec
    settings = spec.settings
    from gpkg_ray.tuning_spec.label import space_preview

    lines = ["Dry run: nothing runs, no trial is started."]
    steps = ", ".join(s.name for s in spec.plan.steps)
    lines.append(f"Tuning {steps}: {spec.plan.objective.describe()}")
    lines += space_preview(spec.plan, {}).splitlines()
    trials = settings.max_trials
    if settings.search == "grid":
        trials, line = _grid_line(spec)
        lines.append(line)
    drawn = seed is None
    if drawn:
        seed = random.randrange(2**31)
    shown_seed = (
        f"{seed} (drawn: give seed={seed} to run these trials)" if drawn else seed
    )
    lines.append(f"Search: {settings.search}, seed {shown_seed}, {trials} trials")
    first = first_trials(spec, seed, min(FIRST_TRIALS, trials))
    later = ""
    if settings.search in LEARNING_SEARCHES and trials > len(first):
        later = " (later ones depend on the results)"
    lines.append(f"First trials it would start{later}:")
    lines += [f"  {n}: {_format(values)}" for n, values in enumerate(first, 1)]
    at_once, why = concurrency(spec, checked.cluster, cpus_here)
    lines.append(f"Each trial: {settings.cpus:g} CPUs, {settings.gpus:g} GPUs; {why}")
    lines.append(time_estimate(earlier, trials, at_once, op))
    return lines


def _grid_line(spec: TuneSpec) -> tuple[int, str]:
    from gpkg_ray.engine.searchers import grid_points

    searched = spec.plan.searched
    points = len(grid_points(searched))
    sizes = " x ".join(str(len(p.domain.values)) for p in searched)
    trials = min(points, spec.settings.max_trials)
    line = f"Grid: {points} points ({sizes})"
    if trials < points:
        line += f"; max-trials={trials} runs the first {trials}"
    return trials, line


def first_trials(spec: TuneSpec, seed: int, count: int) -> list[dict[str, Any]]:
    """The values of the first `count` trials the search of `spec` with
    `seed` starts, as the tune builds its searcher (engine.searchers)."""
    from gpkg_ray.engine.searchers import build_search
    from gpkg_ray.trial.result import OBJECTIVE

    search = build_search(spec, seed)
    algorithm = search.algorithm
    algorithm = getattr(algorithm, "searcher", algorithm)  # ConcurrencyLimiter
    if hasattr(algorithm, "suggest"):  # Optuna's: asked as Ray asks it
        if search.param_space:
            algorithm.set_search_properties(
                OBJECTIVE, spec.plan.objective.mode, search.param_space
            )
        sampled = [algorithm.suggest(f"dry-run-{n}") for n in range(count)]
    else:
        sampled = _variants(algorithm, search.param_space, count)
    return [spec.plan.trial_values(values) for values in sampled]


def _variants(generator, param_space: dict, count: int) -> list[dict[str, Any]]:
    """The first configs of Ray's BasicVariantGenerator (random and grid), as
    it makes them for the Tuner (it needs no Ray running)."""
    from ray.tune.experiment import Experiment

    generator.add_configurations(
        [Experiment("dry-run", _no_trainable, config=param_space, num_samples=count)]
    )
    configs = []
    while len(configs) < count:
        trial = generator.next_trial()
        if trial is None:
            break
        configs.append(trial.config)
    return configs


def _no_trainable(config: dict) -> None:
    """What the Experiment names as its trainable: a dry run runs none."""


def concurrency(spec: TuneSpec, cluster, cpus_here: int | None) -> tuple[int, str]:
    """Trials at once, and how the dry run says so."""
    settings = spec.settings
    if settings.max_concurrent:
        return settings.max_concurrent, f"at most {settings.max_concurrent} at once"
    if cluster is not None:
        return 1, f"as many at once as cluster '{cluster.name}' has room for"
    cpus = cpus_here or os.cpu_count() or 1
    # A trial of GPUs only (cpus=0) is limited by the GPUs: not told here.
    at_once = max(1, math.floor(cpus / settings.cpus)) if settings.cpus else 1
    return at_once, f"{at_once} at once (this machine's {cpus} CPUs)"


def time_estimate(earlier: list, trials: int, at_once: int, op: str) -> str:
    """The tune's time from the trials of earlier tunes of the same op: the
    mean trial's time, trials run `at_once` in waves."""
    times = [
        o.ended - o.started
        for o in earlier
        if o.ended is not None and o.started is not None and o.ended >= o.started
    ]
    if not times:
        return f"Time: no earlier tune of {op} to estimate it from"
    mean = sum(times) / len(times)
    total = mean * math.ceil(trials / max(1, at_once))
    return (
        f"Time: about {_clock(total)} of trials (mean trial {mean:.1f} s over "
        f"{len(times)} trials of earlier tunes of {op}), plus Ray's start"
    )


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _format(values: dict[str, Any]) -> str:
    from gpkg_ray.results.progress import format_values

    return format_values(values)


def print_dry_run(tune_run, checked, guild_home: str, out: Callable = print) -> None:
    """Prints the dry run of the tune run `tune_run`."""
    from gpkg_ray.resume.warm_start import earlier_tune_runs, warm_trials

    runs = earlier_tune_runs("operation", tune_run.opref, guild_home, tune_run.id)
    earlier = warm_trials(runs)
    seed, op = checked.spec.settings.seed, tune_run.opref.op_name
    for line in dry_run_lines(checked, seed, earlier, op):
        out(line)
