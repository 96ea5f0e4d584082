"""The tune run's label: the flags the user changed, then the searched space.

Guild labels a run with every flag by default, and the tune op has 18, none
of which is the space (that is in the op's `config:`). So `guild runs` showed
`cluster=local cpus=1 gpus=0 grace-period=1 ...` for every tune alike. This
label shows what sets one tune apart:

    max-trials=4 seed=7 space: lr=loguniform[0.001:0.1] batch-size=[16,32,64]

Space entries set on the command line (the `space` flag, step flags forced
with --force-flags) are shown in the space, fixed ones too, and not as flags:

    space: lr=0.1 batch-size=[16,32,64] train:epochs=3
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.tuning_spec.overrides import SPACE_FLAG
from gpkg_ray.tuning_spec.plan import Param, TrialPlan
from gpkg_ray.tuning_spec.settings import guild_flagdefs


def tune_label(
    flags: dict[str, Any], user_flags: Iterable[str], plan: TrialPlan
) -> str:
    """The changed flags (see `changed_flags`), then each searched space
    entry and each one set on the command line (the config's fixed ones
    left out: they are the same in every trial and in every tune)."""
    changed = _apart_from_space(changed_flags(flags, user_flags), plan)
    parts = guild_api.flag_assigns(changed)
    shown = [p for p in plan.params if p in plan.searched or p.given]
    if shown:
        parts.append("space:")
        # Without the spaces of a list's repr: the label splits on spaces.
        parts += [f"{p.key}={_describe(p)}" for p in shown]
    return " ".join(parts)


def changed_flags(flags: dict[str, Any], user_flags: Iterable[str]) -> dict[str, Any]:
    """The flags given on the command line or set apart from the package's
    default (a project's own default counts as a change), in the order the
    package defines them; a flag of the project's own only when given."""
    user_flags = set(user_flags)
    defaults = {name: f.get("default") for name, f in guild_flagdefs().items()}
    names = [*defaults, *(name for name in flags if name not in defaults)]
    return {
        name: flags[name]
        for name in names
        if flags.get(name) is not None
        and (name in user_flags or (name in defaults and flags[name] != defaults[name]))
    }


def _apart_from_space(changed: dict[str, Any], plan: TrialPlan) -> dict[str, Any]:
    """`changed` less the flags that set space entries: the `space` flag and
    step flags forced with --force-flags (the space shows their entries)."""
    forced = {p.key for p in plan.params if p.given == "force-flags"}
    return {k: v for k, v in changed.items() if k != SPACE_FLAG and k not in forced}


def _describe(param: Param) -> str:
    return param.domain.describe().replace(", ", ",")


def space_preview(plan: TrialPlan, changed: dict[str, Any]) -> str:
    """The space, shown above Guild's `Continue?` prompt (whose flags are
    the tune op's, not the trials', all 18 of them), with the flags that
    were changed (`changed_flags`), in the prompt's own layout; entries set
    on the command line say so:

        Flags changed: max-trials=4
        Search space of each trial:
          lr: loguniform[0.0001:0.1]
          batch-size: [16, 64] (flag space)
          train:epochs: 5 (every trial, flag space)
    """
    lines = []
    changed = _apart_from_space(changed, plan)
    if changed:
        lines.append("Flags changed: " + " ".join(guild_api.flag_assigns(changed)))
    lines.append("Search space of each trial:")
    for p in plan.params:
        notes = [] if p in plan.searched else ["every trial"]
        if p.when is not None:
            notes = [f"if {p.when[0]}={guild_api.encode_flag_val(p.when[1])}"]
        if p.given:
            notes.append(_GIVEN_BY[p.given])
        shown_notes = f" ({', '.join(notes)})" if notes else ""
        lines.append(f"  {p.key}: {p.domain.describe()}{shown_notes}")
    return "\n".join(lines) + "\n"


_GIVEN_BY = {"space": "flag space", "force-flags": "--force-flags"}
