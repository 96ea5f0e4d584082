"""gpkg.ray's one door into Guild: run state in a Guild home and every call into
Guild's Python API, which is private and pinned to guildai 0.9.

Run state is Guild's on-disk layout, which `guild runs`, `guild compare` and
`guild stop` read:

    GUILD_HOME/runs/RUN_ID/.guild/attrs/NAME    one YAML value per attr
    GUILD_HOME/runs/RUN_ID/.guild/LOCK          pid of the op while it runs
    GUILD_HOME/runs/RUN_ID/.guild/LOCK.remote   a remote's name: `running`
    GUILD_HOME/runs/RUN_ID/.guild/PENDING       `pending` (STAGED: `staged`)

Guild shows a run by its markers first (LOCK.remote, PENDING, STAGED), then by
its `exit_status` attr (0 completed, negative terminated, positive error), then
`running` while the pid in LOCK lives, else `error`.

The rest of gpkg.ray imports no `guild` module but through here; the exceptions
are the base classes a Guild plugin and a remote type must subclass (with
`guild.cli` beside them) and the step launcher, which preloads Guild's modules
by name. Guild is imported inside each function: Guild imports
`gpkg_ray.plugin` for every `guild` command, and `guild.run` alone costs ~45 ms.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import psutil

from gpkg_ray.processes import process_tree, resume_processes, stop_processes

# For annotations only (`guild_api.Run` elsewhere): nothing imports Guild here.
if TYPE_CHECKING:
    from guild.opref import OpRef
    from guild.run import Run

TERMINATED = -15
"""Exit status Guild shows as `terminated`, as for a run `guild stop` ended."""

MARKERS = ("LOCK", "LOCK.remote", "PENDING", "STAGED")
"""Files in a run's `.guild` that make Guild show it as other than its exit
status says (see the module docstring); a closed run has none of them."""

STOP_GRACE_SECONDS = 5.0
"""How long an op stopped as `guild stop` does may take to exit, and then for
its `guild run` to record the exit status."""

CHILD_TERM_SECONDS = 2.0
"""How long after the op its child processes get SIGTERM too (`guild stop`'s
order: the op first, so that it can stop its children itself)."""


# --- Runs in a Guild home -------------------------------------------------


def runs_dir(guild_home: str) -> str:
    return os.path.join(guild_home, "runs")


def run_dir(guild_home: str, run_id: str) -> str:
    """The directory of run `run_id` in `guild_home` (it may not exist yet)."""
    return os.path.join(guild_home, "runs", run_id)


def open_run(guild_home: str, run_id: str) -> Run:
    """Run `run_id` of `guild_home`, whether or not Guild has made it yet."""
    from guild import run as guild_run

    return guild_run.Run(run_id, run_dir(guild_home, run_id))


def is_run_dir(path: str) -> bool:
    """Whether `path` is a Guild run's directory (it has an opref)."""
    return os.path.exists(os.path.join(path, ".guild", "opref"))


def run_exists(guild_home: str, run_id: str) -> bool:
    return os.path.isdir(run_dir(guild_home, run_id))


def home_runs(guild_home: str) -> Iterator[Run]:
    """Every run in `guild_home` that has an opref, in run id order: read as
    Guild does, but without its run filters (`guild runs` hides some)."""
    with contextlib.suppress(FileNotFoundError):
        for run_id in sorted(os.listdir(runs_dir(guild_home))):
            run = open_run(guild_home, run_id)
            if os.path.exists(run.guild_path("opref")):
                yield run


def exit_status(run: Run) -> int | None:
    """The run's exit status; None while it runs, or if it ended unrecorded."""
    return run.get("exit_status")


def has_exit_status(run: Run) -> bool:
    """Whether Guild has recorded how the run's op ended: its `guild run`
    writes the attr as soon as the op exits, before it exits itself. Checks the
    file only, so it is cheap enough to poll."""
    return os.path.exists(run._attr_path("exit_status"))


def run_status(run: Run) -> str:
    """The status Guild shows: running, pending, staged, completed,
    terminated or error."""
    return run.status


def run_command(run: Run) -> tuple[str | None, dict[str, str]]:
    """What the run's `guild run` was given: its opspec, and its flag assigns
    as written (`name=value` -> {name: value}), dependency flags such as
    `operation:train=ID` included; (None, {}) for a run Guild has not made.
    Guild keeps them in the `run_params` attr; `flags` holds the resolved
    values, defaults included."""
    params = run.get("run_params") or {}
    assigns = [str(a).partition("=") for a in params.get("flags") or []]
    return params.get("opspec"), {name: value for name, _, value in assigns}


def timestamp() -> int:
    """Now, as Guild stamps `started` and `stopped` (microseconds)."""
    from guild import run as guild_run

    return guild_run.timestamp()


def package_opref(pkg_name: str, version: str, op_name: str) -> OpRef:
    """The opref of op `op_name` of Guild package `pkg_name`."""
    from guild.opref import OpRef

    return OpRef("package", pkg_name, version, "", op_name)


def init_run(run: Run, opref: OpRef, attrs: dict[str, Any]) -> None:
    """Makes `run` a run of `opref` started now, with `attrs` (a run that
    gpkg.ray writes itself, not one Guild runs)."""
    run.init_skel()
    run.write_opref(opref)
    now = timestamp()
    run.write_attr("id", run.id)
    run.write_attr("initialized", now)
    run.write_attr("started", now)
    for name, value in attrs.items():
        run.write_attr(name, value)


def init_trial_run(
    batch_dir: str, run_dir: str, flags: dict[str, Any], tags: list[str]
) -> Run:
    """Makes the run at `run_dir` a trial of the batch run at `batch_dir`, as
    Guild's optimizers make theirs (batch_util.init_trial_run): the batch's
    proto copied, `flags` and the label they give, a link from the batch run
    to it; `pending` until `guild run --restart` starts it. `tags` join the
    proto's (the label is Guild's, without them)."""
    from guild import batch_util
    from guild import run as guild_run

    trial = batch_util.init_trial_run(guild_run.for_dir(batch_dir), flags, run_dir)
    if tags:
        trial.write_attr("tags", _merged(trial.get("tags") or [], tags))
    return trial


def _merged(first: list[str], more: list[str]) -> list[str]:
    return list(first) + [tag for tag in more if tag not in first]


def package_model_op(package_names: Iterable[str], op_name: str):
    """(model, op name) of op `op_name` of the first Guild package of
    `package_names` that defines it, as a plugin's `resolve_model_op` gives
    them; None if none does."""
    from guild import op_util

    for package in package_names:
        try:
            model, _ = op_util._model_op(f"{package}/{op_name}")
        except op_util.OpDefLookupError:
            continue
        if model.modeldef.get_operation(op_name) is not None:
            return model, op_name
    return None


def implied_optimizer() -> tuple[str, dict[str, Any]] | None:
    """In `guild run OP FLAG=FUNCTION...` with no `--optimizer`, where Guild
    asks for its `random` optimizer: the algorithm and flags of OP's default
    optimizer (its `optimizers:` entry with `default: yes`, or its only one),
    if it has one; else None."""
    import click
    from guild import op_util

    ctx = click.get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    if params.get("optimizer") or params.get("restart") or not params.get("opspec"):
        return None
    try:
        opdef = op_util.opdef_for_opspec(params["opspec"])
    except op_util.OpDefLookupError:
        return None
    optdef = opdef.default_optimizer if opdef is not None else None
    if optdef is None:
        return None
    return optdef.opspec, dict(optdef.flags)


def default_optimizer(opdef) -> tuple[str, dict[str, Any]] | None:
    """(algorithm, flags) of op `opdef`'s default optimizer, if it has one."""
    optdef = opdef.default_optimizer
    return None if optdef is None else (optdef.opspec, dict(optdef.flags))


def is_optimizer_run(run: Run) -> bool:
    """A run of one of the package's optimizer ops (main gpkg_ray.optimizer),
    from the command Guild wrote for it."""
    return "gpkg_ray.optimizer" in (run.get("cmd") or [])


def discard_new_run(op, run: Run) -> None:
    """Removes `run`, which Guild has just made for `op` and not started
    (from a plugin's `run_starting`): a check that failed leaves no run. A
    restarted run, and one outside the Guild home (`--print-trials` makes
    one in a temp dir, which Guild removes), stay."""
    import shutil

    from guild import var

    if getattr(op, "_run", None) is not None:
        return
    if os.path.dirname(os.path.abspath(run.dir)) != os.path.abspath(var.runs_dir()):
        return
    shutil.rmtree(run.dir, ignore_errors=True)


def batch_proto(run: Run) -> Run | None:
    """The proto run of batch run `run` (its `.guild/proto`), or None."""
    return run.batch_proto


def run_opspec(run: Run) -> str:
    """The op of `run` as `guild runs` names it (`train`, `model:train`,
    `gpkg.ray/tpe`)."""
    from guild import run_util

    return run_util.format_operation(run, nowarn=True)


def print_trials(trials: list[dict[str, Any]]) -> None:
    """Prints trials' flags as Guild's `--print-trials` does."""
    from guild import batch_util

    batch_util._print_trials(trials)


def save_trials(trials: list[dict[str, Any]], path: str) -> None:
    """Writes trials' flags as Guild's `--save-trials` does (CSV or JSON)."""
    from guild import batch_util

    batch_util._save_trials(trials, path)


def mark_running(run: Run, pid: int) -> None:
    """Reopens `run` as running in process `pid`: no exit status or stopped
    time, and `pid` in its LOCK (Guild shows it `running` while `pid` lives,
    and `error` if it dies with the run still open)."""
    for name in ("exit_status", "stopped"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(run._attr_path(name))
    with open(run.guild_path("LOCK"), "w") as f:
        f.write(str(pid))


def close_run(
    run: Run,
    status: int,
    *,
    keep_ended: bool = False,
    attrs: dict[str, Any] | None = None,
) -> bool:
    """Closes `run` as ended with exit status `status` (a `stopped` time with
    it, and `attrs` if given) and removes its MARKERS, so that Guild shows the
    status. With `keep_ended`, a run that already has an exit status keeps it
    (and its stopped time); its markers still go. Returns whether the status
    was written."""
    written = not (keep_ended and exit_status(run) is not None)
    if written:
        for name, value in (attrs or {}).items():
            run.write_attr(name, value)
        run.write_attr("exit_status", status)
        run.write_attr("stopped", timestamp())
    for marker in MARKERS:
        with contextlib.suppress(FileNotFoundError):
            os.remove(run.guild_path(marker))
    return written


def set_tags(run: Run, add: list[str], remove: list[str]) -> None:
    """Adds the tags `add` to `run` and removes `remove`, as `guild tag`
    does (its label is left as it is); other tags stay, in their order."""
    old = list(run.get("tags") or [])
    new = [t for t in old if t not in remove]
    new += [t for t in add if t not in new]
    if new != old:
        run.write_attr("tags", new)


# --- A run's op process ---------------------------------------------------


def live_op(run: Run) -> psutil.Process | None:
    """The op process whose pid is in the run's LOCK, if it is this run's op:
    Guild gives the op RUN_ID in its environment; a pid reused since is another
    process. None before Guild started the op, and after it ended. A handle,
    not a pid: it signals no other process once the op has ended."""
    pid = run._get_pid()  # read from the LOCK now: Run.pid is cached
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        environ = proc.environ()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    # Read after the handle was taken: the environment is of the process it holds.
    return proc if environ.get("RUN_ID") == run.id else None


def stop_op(op: psutil.Process) -> None:
    """Stops the op process `op` as `guild stop` does: SIGTERM to it, then
    after CHILD_TERM_SECONDS to its children; waits up to STOP_GRACE_SECONDS
    for them to exit. Its `guild run` then records the run as `terminated`.
    (Guild's own `util.kill_process_tree` takes a pid: this is it, by handle.)"""
    tree = process_tree(op)  # the op first
    if not tree:
        return
    if any(_paused(proc) for proc in tree):
        # A paused op (StepRun.pause) acts on SIGTERM once continued: told
        # first, the op and its children (a wrapper's trainer) end as they
        # wake, before they log another step.
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        resume_processes(tree)
    children = tree[1:]
    with contextlib.suppress(psutil.NoSuchProcess):
        op.terminate()
    psutil.wait_procs(children, timeout=CHILD_TERM_SECONDS)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, left = psutil.wait_procs(tree, timeout=STOP_GRACE_SECONDS)
    # Children of an op that ended before its children did.
    stop_processes([proc for proc in left if proc is not op], grace=CHILD_TERM_SECONDS)


def _paused(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def wait_for_exit_status(run: Run, timeout: float = STOP_GRACE_SECONDS) -> bool:
    """Waits up to `timeout` seconds for Guild to record the run's exit status;
    returns whether it did."""
    deadline = time.monotonic() + timeout
    while exit_status(run) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


# --- Flags, as Guild writes and reads them --------------------------------


def encode_flag_val(value: Any) -> str:
    """`value` as written on a `guild run` command line."""
    from guild import flag_util

    return flag_util.encode_flag_val(value)


def decode_flag_val(text: str) -> Any:
    """A flag value written as on a `guild run` command line: `[1, 2]` and
    sequences such as `range[1:4]` come back as lists."""
    from guild import flag_util

    return flag_util.decode_flag_val(text)


def decode_flag_function(text: str) -> tuple[str | None, tuple]:
    """(name, args) of a flag function, e.g. `loguniform[1e-5:1e-1]` ->
    ('loguniform', (1e-05, 0.1)); raises ValueError for anything else."""
    from guild import flag_util

    return flag_util.decode_flag_function(text)


def flag_assigns(values: dict[str, Any]) -> list[str]:
    """`name=value` for each flag, floats shortened, as Guild labels a run."""
    from guild import flag_util

    return flag_util.flag_assigns(values, truncate_floats=True)


# --- Op definitions -------------------------------------------------------


def op_config(opdef) -> Any:
    """The op definition's `config` entry as written (Guild keeps keys it does
    not know, but gives no accessor for them)."""
    return opdef._data.get("config")


def package_of_op(opdef) -> str | None:
    """The name Guild gives the installed package whose op `opdef` is (`guild
    run PKG/OP`), or None for an op of a project's guildfile. Guild names a
    package by its distribution, whose name pip may have normalized:
    `gpkg.ray` installed with build isolation is listed as `gpkg-ray`."""
    modelref = opdef._modelref  # set by Guild when it resolves an opspec
    if modelref is None or modelref.dist_type != "package":
        return None
    return modelref.dist_name


def operation_dependencies(opdef) -> list[tuple[str, str]]:
    """(op pattern, dependency flag) of each `operation:` source the op
    requires, e.g. ('train', 'operation:train'). A dependency Guild cannot
    resolve is left out: Guild itself reports it when the op runs."""
    from guild import op_dep

    found = []
    for depdef in opdef.dependencies:
        try:
            resdef, _ = op_dep.resource_def(depdef, {})
        except Exception:
            continue
        for source in resdef.sources:
            if source.parsed_uri.scheme == "operation":
                flag = op_dep.source_flag_name_candidates(source)[0]
                found.append((source.parsed_uri.path, flag))
    return found


class NoRequiredRun(Exception):
    """Guild finds no run for an op's `operation:` requirement: its reason."""


def required_run(
    opdef, flag: str, run_id_prefix: str | None, guild_home: str
) -> tuple[str, str]:
    """The run Guild resolves `opdef`'s requirement of dependency flag `flag`
    to in `guild_home`, by Guild's own rule as `guild run` applies it
    (guild/resolver.py: the run `run_id_prefix` names, else a marked run,
    else the latest): (run id, its op as Guild shows it). Raises
    NoRequiredRun with Guild's reason."""
    from guild import config, op_dep, resolver, run_util

    flag_vals = {} if run_id_prefix is None else {flag: run_id_prefix}
    with config.SetGuildHome(guild_home):
        for depdef in opdef.dependencies:
            dep = op_dep.dep_for_depdef(depdef, flag_vals)
            for source in dep.resdef.sources:
                if source.parsed_uri.scheme != "operation":
                    continue
                if op_dep.source_flag_name_candidates(source)[0] != flag:
                    continue
                found = op_dep.resolver_for_source(source, dep)
                try:
                    run = found.resolve_op_run(run_id_prefix)
                except resolver.ResolutionError as e:
                    raise NoRequiredRun(str(e)) from e
                return run.id, run_util.format_operation(run, nowarn=True)
    raise NoRequiredRun(f"op {opdef.name} has no requirement {flag}")


def required_run_ids(guild_home: str, run_id: str) -> list[str]:
    """The ids of the runs a run's resolved dependencies name (its `deps`
    attr) that are in `guild_home`."""
    deps = open_run(guild_home, run_id).get("deps") or {}
    found = []
    for sources in deps.values() if isinstance(deps, dict) else ():
        for resolved in sources.values() if isinstance(sources, dict) else ():
            other = resolved.get("config") if isinstance(resolved, dict) else None
            if (
                isinstance(other, str)
                and re.fullmatch(r"[0-9a-f]{32}", other)
                and run_exists(guild_home, other)
            ):
                found.append(other)
    return found


def relocated_opref(encoded: str, project_dir: str) -> tuple[str, str] | None:
    """A run's opref (the text of `.guild/opref`) as if its op ran from the
    Guild file of the same name in `project_dir`, and the directory it named;
    None when it names no Guild file (or cannot be read)."""
    from guild.opref import OpRef, OpRefError

    try:
        opref = OpRef.parse(encoded)
    except (OpRefError, ValueError, TypeError):
        return None
    if opref.pkg_type != "guildfile" or not opref.pkg_name:
        return None
    guildfile = os.path.join(project_dir, os.path.basename(opref.pkg_name))
    return str(opref._replace(pkg_name=guildfile)), os.path.dirname(opref.pkg_name)


def relocated_attr(encoded: str, moves: Mapping[str, str]) -> str | None:
    """A run attr's text (YAML, as Guild writes it) with each path `moves`
    names (old -> new) replaced wherever a string holds it; None when the
    text is not YAML or nothing changed."""
    from guild import yaml_util

    try:
        value = yaml_util.decode_yaml(encoded)
    except Exception:
        return None

    def moved(val: Any) -> Any:
        if isinstance(val, str):
            for old, new in moves.items():
                val = val.replace(old, new)
            return val
        if isinstance(val, dict):
            return {moved(k): moved(v) for k, v in val.items()}
        if isinstance(val, list):
            return [moved(v) for v in val]
        return val

    relocated = moved(value)
    if relocated == value:
        return None
    return yaml_util.encode_yaml(relocated, strict=True) + os.linesep


def sourcecode_root(opdef) -> str:
    """The directory Guild copies the op's source code from."""
    from guild import op_util

    return op_util._sourcecode_root(opdef)


def copy_sourcecode(opdef, root: str, dest: str) -> None:
    """Copies the files of `root` that the op's sourcecode rules select (its
    `sourcecode` config, else the project's git files or Guild's defaults)
    into `dest`, as Guild copies them into a run."""
    from guild import op_util

    select = op_util.sourcecode_select_for_opdef(opdef)
    op_util.copy_sourcecode(root, select, dest)


def pending_op(op) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(op definition, resolved flag values, flag values the user gave) of the
    op Guild hands a plugin's `apply_cmd_env`, before the run exists."""
    return op._opdef, op._op_flag_vals, op._user_flag_vals


class PendingRun:
    """What a batch check reads of a run Guild has not made yet: its opref
    and attrs, as the run will have them (see `pending_batch`)."""

    batch_proto = None

    def __init__(self, opref: OpRef, attrs: dict[str, Any]):
        self.opref = opref
        self._attrs = attrs

    def get(self, name: str, default: Any = None) -> Any:
        return self._attrs.get(name, default)


def pending_batch(op) -> tuple[PendingRun, PendingRun, Any] | None:
    """(batch run, proto run, the trial op's definition) as Guild is about to
    make them for `op`, a new batch of an optimizer op, from a plugin's
    `apply_cmd_env`; None where that cannot be told as Guild tells it (a
    restart, `--proto`, `--edit-flags`, batch files, a remote, no click
    context).

    Guild calls `apply_cmd_env` for a batch op before it has parsed the
    optimizer's flags (`-Fo`) and its batch options (run_impl's
    `_state_init_batch_op`: `_op_init_op_cmd` comes before
    `_op_init_user_flags(opt_flags)`, `_op_init_op_flags` and
    `_op_init_batch_config`), and it makes the batch run only after its
    `Continue?` prompt. So this resolves them the same way, with Guild's
    own functions of run_impl, from the same command line: the trial op's
    flags (the proto's), the optimizer's flags over those its `optimizers:`
    entry gave `op`, `--max-trials` and the objective."""
    import click
    from guild import click_util
    from guild.commands import run_impl

    ctx = click.get_current_context(silent=True)
    if ctx is None or getattr(op, "_run", None) is not None:
        return None
    params = dict(ctx.params)
    skip = ("restart", "proto", "edit_flags", "remote", "help_op", "stage_trials")
    if any(params.get(name) for name in skip) or "opt_flags" not in params:
        return None
    args = click_util.Args(**params)
    run_impl._maybe_shift_opspec(args)
    if not args.opspec:
        return None
    user_op = run_impl.Operation()
    user_op._opdef = run_impl.opdef_for_opspec(args.opspec)
    run_impl._op_init_user_flags(args.flags, user_op)
    if user_op._batch_trials:
        return None
    run_impl._op_init_op_flags(args, user_op)
    batch = run_impl.Operation()
    batch._opdef = op._opdef
    batch._op_flag_vals.update(op._op_flag_vals)
    run_impl._op_init_user_flags(args.opt_flags, batch)
    run_impl._op_init_op_flags(args, batch)
    run_impl._op_init_batch_config(args, user_op, batch)
    batch_run = PendingRun(
        op._opdef.opref,
        {
            "flags": batch._op_flag_vals,
            "user_flags": batch._user_flag_vals,
            "objective": batch._objective,
            "max_trials": batch._max_trials,
            "random_seed": args.random_seed,
        },
    )
    proto = PendingRun(user_op._opdef.opref, {"flags": user_op._op_flag_vals})
    return batch_run, proto, user_op._opdef


def set_pending_label(op, label: str) -> None:
    """Makes `label` the label of the run Guild is about to create for `op`
    (from a plugin's `apply_cmd_env`, which Guild calls before it renders the
    label). A `--label` of the user's stands; with `--tag`s, whose template
    is `TAGS ${default_label}`, `label` takes the place of the flags."""
    template = op._label_template
    if template is None:
        op._label_template = label
    elif "${default_label}" in template:
        op._label_template = template.replace("${default_label}", label)


def keep_env_out_of_run(op, names: Iterable[str]) -> None:
    """Keeps the variables `names` out of what Guild stores of the run it is
    about to create for `op` (from a plugin's `apply_cmd_env`).

    Guild records the op's environment in the run's `env` attr, less the names
    that contain `token`, `secret` or `password` and the op's `env-secrets`,
    which it takes from the op definition after the plugins ran
    (run_impl._op_init_private_env): the names join those. A staged run
    (`--stage`) gets the whole environment in `.guild/ENV`, unfiltered: when
    staging, the names leave this process's environment (its op does not run
    now; `guild run --start` runs it with the environment of that command)."""
    import click

    names = list(names)
    opdef = op._opdef
    secrets = list(opdef.env_secrets or [])
    opdef.env_secrets = secrets + [name for name in names if name not in secrets]
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("stage"):
        for name in names:
            os.environ.pop(name, None)


def run_will_prompt() -> bool:
    """Whether the `guild run` in progress will ask `Continue?` (no `-y`, and
    not one of the options that print and exit): read from its command line,
    which Guild parses with click."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    params = ctx.params
    printing = ("print_cmd", "print_env", "print_trials", "save_trials", "help_op")
    return not params.get("yes", True) and not any(params.get(p) for p in printing)


# --- The running op and Guild's config ------------------------------------


def current_run() -> Run:
    """The run of this process's op (from RUN_DIR and RUN_ID)."""
    from guild import _api

    return _api.current_run()


def run_opdef(run: Run):
    """The op definition `run` ran, read from its Guild file; None if gone.

    Read from the Guild file's directory, as `guild run` reads it: Guild
    imports the flags of a `flags-dest: config:FILE` op from FILE relative to
    the process's cwd (guild/plugins/config_flags.py), and an op runs in its
    run dir, where such an op's flags (`model.layers`) would be missing."""
    from guild import run_util

    opref = run.opref
    if opref.pkg_type != "guildfile":
        return run_util.run_opdef(run)
    where = opref.pkg_name
    if not os.path.isdir(where):
        where = os.path.dirname(where)
    if not os.path.isdir(where):
        return run_util.run_opdef(run)
    here = os.getcwd()
    os.chdir(where)
    try:
        return run_util.run_opdef(run)
    finally:
        os.chdir(here)


def guild_home() -> str:
    """The Guild home in effect (GUILD_HOME, else Guild's default)."""
    from guild import config

    return config.guild_home()


def set_cwd(path: str) -> None:
    """Makes Guild read its config (`./guild-config.yml`) relative to `path`:
    an op runs in its run dir, not where `guild run` was typed."""
    from guild import config

    config.set_cwd(path)


def config_cwd() -> str:
    """Where Guild reads `./guild-config.yml` from: where the user ran the
    command (an op's tuner sets it back there, see set_cwd)."""
    from guild import config

    return config.cwd()


def user_remotes() -> dict[str, Any]:
    """The `remotes` of the user's Guild config (GUILD_CONFIG,
    ./guild-config.yml or ~/.guild/config.yml)."""
    from guild import config

    return config.user_config().get("remotes") or {}


def remote_config_path(path: str) -> str:
    """A path of a remote's config as Guild's ssh remote takes it
    (`remote_util.config_path`): `~` and variables expanded, a relative path
    taken from the Guild config's directory."""
    from guild import remote_util

    return remote_util.config_path(path)


# --- Scalars ---------------------------------------------------------------


def write_scalars(logdir: str, scalars: Mapping[str, float], step: int = 0) -> None:
    """Writes `scalars` (tag -> value) to a new TF event file in `logdir` (a
    run's `.guild` dir for scalars Guild shows as the run's own), as 64-bit
    float tensors, which Guild reads back exactly. Guild's own writer stores a
    32-bit `simple_value`: 0.963889 came back as 0.9638890027999878 in `guild
    compare --csv`.

    Only these scalars: in an op's process (the tune's), Guild's summary
    plugins (cpu, memory, disk, gpu) wrap `SummaryWriter.add_scalar` to add
    their `sys/*` values, and a tune's results are no measure of the machine's
    load; this writes around `add_scalar`."""
    from guild.summary import SummaryWriter
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2

    # Marked as the scalars plugin's, as TensorBoard marks its own tensor
    # scalars, so that `guild tensorboard` plots them too.
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    values = [
        summary_pb2.Summary.Value(
            tag=tag,
            metadata=metadata,
            tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_DOUBLE, double_val=[float(value)]
            ),
        )
        for tag, value in scalars.items()
    ]
    with SummaryWriter(logdir) as writer:
        writer._add_summary(summary_pb2.Summary(value=values), step)


def dependencies_settled(run_dir: str) -> bool:
    """Whether a run's dependencies are all in its directory: Guild writes the
    run's opref after it marks the run PENDING, resolves the dependencies,
    then clears PENDING and starts the op (guild/op.py `run`)."""
    guild_dir = os.path.join(run_dir, ".guild")
    return os.path.exists(os.path.join(guild_dir, "opref")) and not os.path.exists(
        os.path.join(guild_dir, "PENDING")
    )


def dependency_paths(run_dir: str) -> frozenset[str]:
    """Run-relative paths of what Guild put into a run's directory from its
    dependencies, copied (the default `target-type`) or linked: the `d`
    entries of the run's manifest (guild/run_manifest.py)."""
    from guild import run_manifest

    try:
        entries = run_manifest.read_manifest_entries(run_dir)
    except OSError:  # no manifest: a run Guild did not make, or no files
        return frozenset()
    return frozenset(
        os.path.normpath(entry[1])
        for entry in entries
        if len(entry) > 1 and entry[0] == "d"
    )


def patch_tensorboard_logging() -> None:
    """Quiets TensorBoard's event loader as Guild does before reading scalars."""
    from guild.tfevent import _ensure_tb_logging_patched

    _ensure_tb_logging_patched()


def scalar_of_event(event, value) -> tuple[str, float, int] | None:
    """(tag, value, step) of one summary value of a TF event, decoded as Guild
    decodes scalars (a simple value or a float tensor); None for others."""
    from guild.tfevent import _try_scalar_event

    return _try_scalar_event(event, value)
