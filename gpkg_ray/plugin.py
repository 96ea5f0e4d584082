"""Guild plugin of gpkg.ray: checks a tune op before Guild creates its run.

Guild calls `apply_cmd_env` for each `guild run` of an op the plugin is enabled
for, after flags are resolved and before the run directory exists. A bad config,
flag or cluster therefore stops with one line (`guild: ...`) and leaves no run.
The check is the tuner's own (`gpkg_ray.preparation.check_tune`), made again
when the run starts. The variable a cluster's `auth-token-env` names is kept out
of what Guild stores of the run (its `env` attr).
"""

from __future__ import annotations

from guild import plugin as pluginlib

TUNER_MAIN = "gpkg_ray.tuner"


def is_tune_op(opdef) -> bool:
    main = (opdef.main or "").split()
    return bool(main) and main[0] == TUNER_MAIN


class TunePlugin(pluginlib.Plugin):
    def enabled_for_op(self, opdef):
        if is_tune_op(opdef):
            return True, f"main is {TUNER_MAIN}"
        return False, "not a gpkg.ray tune operation"

    def apply_cmd_env(self, op, cmd_env):
        from guild import cli

        from gpkg_ray import guild_api
        from gpkg_ray.errors import GpkgRayError
        from gpkg_ray.preparation import check_tune
        from gpkg_ray.tuning_spec.label import (
            changed_flags,
            space_preview,
            tune_label,
        )

        opdef, flags, user_flags = guild_api.pending_op(op)
        try:
            checked = check_tune(
                opdef, flags, user_flags, opdef.opref, guild_api.guild_home()
            )
        except GpkgRayError as e:
            cli.error(str(e))
        cluster = checked.cluster
        if cluster is not None and cluster.auth_token_env:
            # Its name may not look like a secret's to Guild (RAY_KEY).
            guild_api.keep_env_out_of_run(op, [cluster.auth_token_env])
        # Guild's default label and its prompt list all the tune op's flags,
        # and not the space (the op's `config:`).
        label = tune_label(flags, user_flags, checked.spec.plan)
        guild_api.set_pending_label(op, label)
        if guild_api.run_will_prompt():
            changed = changed_flags(flags, user_flags)
            print(space_preview(checked.spec.plan, changed), end="", flush=True)
