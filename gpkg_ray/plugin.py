"""Guild plugin of gpkg.ray: checks a tune op before Guild creates its run.

Guild calls `apply_cmd_env` for each `guild run` of an op the plugin is enabled
for, after flags are resolved and before the run directory exists. A bad config,
flag or cluster therefore stops with one line (`guild: ...`) and leaves no run.
The check is the tuner's own (`gpkg_ray.preparation.check_tune`), made again
when the run starts. The variable a cluster's `auth-token-env` names is kept out
of what Guild stores of the run (its `env` attr).

A batch of an optimizer op (`-o gpkg.ray/tpe`) is checked there too, before
Guild's `Continue?` prompt, on its flags as Guild is about to resolve them
(`guild_api.pending_batch`), and again in `run_starting` on the runs Guild made.
"""

from __future__ import annotations

from guild import plugin as pluginlib

TUNER_MAIN = "gpkg_ray.tuner"
OPTIMIZER_MAIN = "gpkg_ray.optimizer"


def _main_module(opdef) -> str | None:
    main = (opdef.main or "").split()
    return main[0] if main else None


def is_tune_op(opdef) -> bool:
    return _main_module(opdef) == TUNER_MAIN


def is_optimizer_op(opdef) -> bool:
    """An optimizer op of the package (gpkg.ray/random, grid, tpe)."""
    return _main_module(opdef) == OPTIMIZER_MAIN


CHECKED = "_gpkg_ray_checked"
"""Set on a batch op Guild is about to run once its pending batch passed."""

PACKAGE_NAMES = ("gpkg-ray", "gpkg.ray")
"""The package as Guild finds it (pip normalizes the distribution's name to
`gpkg-ray` in an isolated build), and as users write it."""


class TunePlugin(pluginlib.Plugin):
    # Before Guild's skopt plugin, which resolves `random` (see below).
    resolve_model_op_priority = 50

    def resolve_model_op(self, opspec):
        """`gpkg.ray/tpe` (`-o gpkg.ray/tpe`) is the package's op whatever
        name pip gave the distribution: Guild itself finds its ops by the
        installed name only (`gpkg-ray/tpe`).

        `random` is what Guild asks for when a flag value is a function
        (`lr=loguniform[..]`) and no optimizer is named: where the op's
        default optimizer (`optimizers:` in guild.yml) is one of this
        package's, that one is the batch op, as with `--optimize`."""
        from gpkg_ray import guild_api

        if opspec == "random":
            implied = guild_api.implied_optimizer()
            if implied is None:
                return None
            opspec = implied[0]
        package, slash, op_name = (opspec or "").partition("/")
        if not slash or package not in PACKAGE_NAMES or ":" in op_name:
            return None
        return guild_api.package_model_op(PACKAGE_NAMES, op_name)

    def enabled_for_op(self, opdef):
        if is_tune_op(opdef):
            return True, f"main is {TUNER_MAIN}"
        if is_optimizer_op(opdef):
            return True, f"main is {OPTIMIZER_MAIN}"
        return False, "not a gpkg.ray tune operation"

    def run_starting(self, run, op, pidfile):
        """A batch of an optimizer op, checked on the runs Guild has made:
        its flags, proto and batch options as Guild resolved them. A new
        batch checked before the prompt (`_check_pending_batch`) is not
        checked again here; this is the check of a restart, `--proto`,
        `--edit-flags` or a batch file. A bad space or flag stops with one
        line, and the batch run Guild has just made (not one restarted)
        goes."""
        from guild import cli

        from gpkg_ray import guild_api
        from gpkg_ray.errors import GpkgRayError
        from gpkg_ray.preparation import check_batch

        if not guild_api.is_optimizer_run(run) or getattr(op, CHECKED, False):
            return
        try:
            check_batch(run, guild_api.guild_home())
        except GpkgRayError as e:
            guild_api.discard_new_run(op, run)
            cli.error(str(e))

    @staticmethod
    def _check_pending_batch(op) -> None:
        """A new batch of an optimizer op, checked before Guild's `Continue?`
        prompt and before it makes any run, on its flags and batch options
        resolved as Guild is about to resolve them (guild_api.pending_batch).
        Checked again in run_starting, on the runs Guild made."""
        from guild import cli

        from gpkg_ray import guild_api
        from gpkg_ray.errors import GpkgRayError
        from gpkg_ray.preparation import check_pending_batch

        pending = guild_api.pending_batch(op)
        if pending is None:
            return
        batch_run, proto, trial_opdef = pending
        try:
            check_pending_batch(batch_run, proto, trial_opdef, guild_api.guild_home())
        except GpkgRayError as e:
            cli.error(str(e))
        # run_starting need not check it again (nor ask the cluster again):
        # the tuner does, as the batch starts.
        setattr(op, CHECKED, True)

    def apply_cmd_env(self, op, cmd_env):
        from gpkg_ray import guild_api

        opdef, flags, user_flags = guild_api.pending_op(op)
        if opdef is None:
            return
        if is_optimizer_op(opdef):
            self._check_pending_batch(op)
            return
        from guild import cli

        from gpkg_ray.errors import GpkgRayError
        from gpkg_ray.preparation import check_tune
        from gpkg_ray.tuning_spec.label import (
            changed_flags,
            space_preview,
            tune_label,
        )

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
