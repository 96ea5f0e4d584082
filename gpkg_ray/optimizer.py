"""Main of the Guild optimizer ops `gpkg.ray/random`, `gpkg.ray/grid` and
`gpkg.ray/tpe`:

    guild run train lr=loguniform[1e-4:1e-1] -o gpkg.ray/tpe --max-trials 20

Guild makes the batch run (this op's) with `train`'s run as its proto. The
batch is a tune like the `tune` op's, on the same engine: its TuneSpec comes
from the proto's flags and Guild's batch attrs (tuning_spec.batch) instead of
a `config:`. Each trial is one run of the proto's op, made from the proto as
Guild makes its batch trials (linked from the batch run, its flags and label
Guild's) and started with `guild run --restart`, in a Ray trial whose scalars
are read while it runs (trial.step_run). The batch run holds what a tune run
holds: the journal (`guild run --restart BATCH` resumes), trials.csv/json,
its scalars, the summary and the report.

Guild's `--print-trials` and `--save-trials` run this op with PRINT_TRIALS /
SAVE_TRIALS set: a grid's trials are known up front and are printed or saved;
a random or TPE search picks them on Ray as it goes, and says so in one line.
"""

from __future__ import annotations

import os
import sys

from gpkg_ray.errors import SpecError


def main() -> int:
    from gpkg_ray.tuner import run_tune_op

    if os.getenv("PRINT_TRIALS") == "1" or os.getenv("SAVE_TRIALS"):
        return _print_or_save_trials()
    if os.getenv("PRINT_TRIALS_CMD") == "1":
        print("gpkg.ray: --print-cmd shows the batch's command only", file=sys.stderr)
        return 0
    return run_tune_op(_check, batch=True)


def _check():
    """The batch run and its checked tune (as the plugin checked it before
    the batch started); raises GpkgRayError."""
    from gpkg_ray import guild_api
    from gpkg_ray.preparation import check_batch

    if not os.getenv("RUN_DIR"):
        raise SpecError(
            "gpkg_ray.optimizer runs as a Guild optimizer: "
            "`guild run OP FLAG=[...] -o gpkg.ray/tpe`"
        )
    if os.getenv("CMD_DIR"):
        guild_api.set_cwd(os.environ["CMD_DIR"])  # see tuner._check
    batch_run = guild_api.current_run()
    return batch_run, check_batch(batch_run, guild_api.guild_home())


def _print_or_save_trials() -> int:
    from gpkg_ray import guild_api
    from gpkg_ray.errors import GpkgRayError

    try:
        _, checked = _check()
        trials = planned_trials(checked.spec)
    except GpkgRayError as e:
        print(f"gpkg.ray: {e}", file=sys.stderr, flush=True)
        return 2
    if os.getenv("SAVE_TRIALS"):
        guild_api.save_trials(trials, os.environ["SAVE_TRIALS"])
    else:
        guild_api.print_trials(trials)
    return 0


def planned_trials(spec) -> list[dict]:
    """Every trial's flags, when they are known before the search (a grid);
    raises SpecError for a search that picks them as it goes."""
    from gpkg_ray.tuning_spec.batch import grid_trials

    if spec.settings.search != "grid":
        raise SpecError(
            f"gpkg.ray/{spec.settings.search} picks each trial's values on Ray as "
            "the search goes: there are no trials to print or save before it "
            "runs (gpkg.ray/grid has)"
        )
    return grid_trials(spec)


if __name__ == "__main__":
    sys.exit(main())
