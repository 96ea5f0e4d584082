"""The tune run's label: the flags the user changed, then the searched space.

Guild labels a run with every flag by default, and the tune op has 17, none
of which is the space (that is in the op's `config:`). So `guild runs` showed
`cluster=local cpus=1 gpus=0 grace-period=1 ...` for every tune alike. This
label shows what sets one tune apart:

    max-trials=4 seed=7 space: lr=loguniform[0.001:0.1] batch-size=[16,32,64]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gpkg_ray import guild_api
from gpkg_ray.tuning_spec.plan import Param, TrialPlan
from gpkg_ray.tuning_spec.settings import guild_flagdefs


def tune_label(
    flags: dict[str, Any], user_flags: Iterable[str], plan: TrialPlan
) -> str:
    """The changed flags (see `changed_flags`), then each searched space
    entry (fixed ones left out: they are the same in every trial)."""
    parts = guild_api.flag_assigns(changed_flags(flags, user_flags))
    if plan.searched:
        parts.append("space:")
        # Without the spaces of a list's repr: the label splits on spaces.
        parts += [f"{p.key}={_describe(p)}" for p in plan.searched]
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


def _describe(param: Param) -> str:
    return param.domain.describe().replace(", ", ",")


def space_preview(plan: TrialPlan, changed: dict[str, Any]) -> str:
    """The space, shown above Guild's `Continue?` prompt (whose flags are
    the tune op's, not the trials', all 17 of them), with the flags that
    were changed (`changed_flags`), in the prompt's own layout:

        Flags changed: max-trials=4
        Search space of each trial:
          lr: loguniform[0.0001:0.1]
          train:epochs: 5 (every trial)
    """
    lines = []
    if changed:
        lines.append("Flags changed: " + " ".join(guild_api.flag_assigns(changed)))
    lines.append("Search space of each trial:")
    for p in plan.params:
        fixed = " (every trial)" if p not in plan.searched else ""
        lines.append(f"  {p.key}: {p.domain.describe()}{fixed}")
    return "\n".join(lines) + "\n"
