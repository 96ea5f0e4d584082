"""The tune run's label and the lines above Guild's prompt: the flags the user
changed and the space, not every one of the tune op's flags (issue 17 item 12)."""

from __future__ import annotations

from gpkg_ray.tuning_spec import Choice, Fixed, Objective, Param, Range, TrialPlan
from gpkg_ray.tuning_spec.label import changed_flags, space_preview, tune_label
from gpkg_ray.tuning_spec.settings import guild_flagdefs

OBJECTIVE = Objective("acc_val", "max", "evaluate")
PLAN = TrialPlan(
    steps=(),
    params=(
        Param("lr", Range(1e-4, 0.1, log=True), (("train", "lr"),)),
        Param("batch-size", Choice((32, 64, 128)), (("train", "batch-size"),)),
        Param("train:epochs", Fixed(5), (("train", "epochs"),)),
    ),
    objective=OBJECTIVE,
    scheduler_metric=OBJECTIVE,
)
DEFAULTS = {name: f.get("default") for name, f in guild_flagdefs().items()}


def test_the_label_is_the_changed_flags_then_the_searched_space():
    # max-trials set on the command line, search as the project's default,
    # cluster given but left as it was, a project flag of its own not given.
    flags = {**DEFAULTS, "max-trials": 4, "search": "tpe", "extra": 1}

    label = tune_label(flags, ["max-trials", "cluster"], PLAN)

    assert label == (
        "cluster=local max-trials=4 search=tpe "
        "space: lr=loguniform[0.0001:0.1] batch-size=[32,64,128]"
    )


def test_the_label_of_a_tune_with_every_default_is_its_space():
    assert tune_label(dict(DEFAULTS), [], PLAN) == (
        "space: lr=loguniform[0.0001:0.1] batch-size=[32,64,128]"
    )


def test_the_prompt_shows_the_changed_flags_and_the_whole_space():
    changed = changed_flags({**DEFAULTS, "seed": 7}, ["seed"])

    assert space_preview(PLAN, changed) == (
        "Flags changed: seed=7\n"
        "Search space of each trial:\n"
        "  lr: loguniform[0.0001:0.1]\n"
        "  batch-size: [32, 64, 128]\n"
        "  train:epochs: 5 (every trial)\n"
    )


# Entries set on the command line (issue 17 item 5): shown in the space, fixed
# ones too, and not as flags (the `space` flag, step flags forced).
GIVEN_PLAN = TrialPlan(
    steps=(),
    params=(
        Param("lr", Fixed(0.1), (("train", "lr"),), given="space"),
        Param("batch-size", Choice((32, 64, 128)), (("train", "batch-size"),)),
        Param("dropout", Range(0.0, 0.3), (("train", "dropout"),), given="space"),
        Param("train:epochs", Fixed(5), (("train", "epochs"),)),
        Param("evaluate:seed", Fixed(3), (("evaluate", "seed"),), given="force-flags"),
    ),
    objective=OBJECTIVE,
    scheduler_metric=OBJECTIVE,
)
GIVEN_FLAGS = {
    **DEFAULTS,
    "max-trials": 4,
    "space": "lr=0.1 dropout=uniform[0:0.3]",
    "evaluate:seed": 3,
}
GIVEN_USER_FLAGS = ["max-trials", "space", "evaluate:seed"]


def test_the_label_shows_entries_set_on_the_command_line_in_the_space():
    label = tune_label(GIVEN_FLAGS, GIVEN_USER_FLAGS, GIVEN_PLAN)

    assert label == (
        "max-trials=4 space: lr=0.1 batch-size=[32,64,128] dropout=uniform[0.0:0.3] "
        "evaluate:seed=3"
    )


def test_the_prompt_says_which_entries_the_command_line_set():
    changed = changed_flags(GIVEN_FLAGS, GIVEN_USER_FLAGS)

    assert space_preview(GIVEN_PLAN, changed) == (
        "Flags changed: max-trials=4\n"
        "Search space of each trial:\n"
        "  lr: 0.1 (every trial, flag space)\n"
        "  batch-size: [32, 64, 128]\n"
        "  dropout: uniform[0.0:0.3] (flag space)\n"
        "  train:epochs: 5 (every trial)\n"
        "  evaluate:seed: 3 (every trial, --force-flags)\n"
    )
