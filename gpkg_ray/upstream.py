"""Runs from outside a trial that its steps require: a `prepare` op the user
ran once, say, that `train` requires (`requires: [{operation: prepare}]`).

They are resolved once per tune, on the driver, by Guild's own rule (the
user's pin, `operation:prepare: RUN_ID` in the space; else a marked run; else
the latest), and every trial pins the step to that run by its id: trials of
one tune never see different runs, and a run Guild cannot find stops the tune
before any trial, with one line.

On a cluster the nodes have none of the driver's runs. Each required run goes
to every node that runs a trial, once per node per tune, with the runs it
requires in turn (a chain: `prepare` -> `fetch`), under the remote's size
policy: more than `max-copy-mb` of them stops the tune before any trial. On
the node they keep their ids, so the step runs that come home name the
driver's runs in their dependencies, as a local tune's do.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpkg_ray import guild_api
from gpkg_ray.errors import ClusterError, SpecError
from gpkg_ray.tuning_spec.space import Choice, Fixed
from gpkg_ray.tuning_spec.steps import UpstreamRun

if TYPE_CHECKING:
    from gpkg_ray.remote.config import ClusterConfig
    from gpkg_ray.tuning_spec import TrialPlan


def resolve_upstream(
    plan: TrialPlan, step_opdefs, guild_home: str
) -> tuple[UpstreamRun, ...]:
    """The run each step's requirements from outside the trial resolve to in
    `guild_home` (one per value the space pins it to); raises SpecError when
    Guild finds none."""
    found = []
    for step, opdef in zip(plan.steps, step_opdefs, strict=True):
        for flag, op_pattern in step.requires.items():
            for given in _pins_given(plan, step.name, flag):
                try:
                    run_id, op = guild_api.required_run(opdef, flag, given, guild_home)
                except guild_api.NoRequiredRun as e:
                    pinned = "" if given is None else f"={given}"
                    raise SpecError(
                        f"step {step.name} requires {flag}{pinned}: {e}: run "
                        f"{op_pattern} first, or pin a run with `{flag}: RUN_ID` "
                        "in the space"
                    ) from e
                found.append(UpstreamRun(step.name, flag, given, run_id, op))
    return tuple(found)


def _pins_given(plan: TrialPlan, step: str, flag: str) -> list[str | None]:
    """The run ids (or prefixes) the space pins `flag` of `step` to; [None]
    when it pins none (Guild chooses)."""
    for param in plan.params:
        if (step, flag) not in param.targets:
            continue
        if isinstance(param.domain, Fixed):
            return [str(param.domain.value)]
        if isinstance(param.domain, Choice):
            return [str(value) for value in param.domain.values]
        raise SpecError(
            f"space entry '{param.key}': {flag} takes a run id, or a list of "
            "them, not a range"
        )
    return [None]


def sent_run_ids(upstream: tuple[UpstreamRun, ...], guild_home: str) -> list[str]:
    """The runs a cluster's nodes need: each required run, and the runs it
    requires in turn, each once."""
    return _with_required([run.run_id for run in upstream], guild_home)


def _with_required(run_ids: list[str], guild_home: str) -> list[str]:
    found: list[str] = []
    todo = list(run_ids)
    while todo:
        run_id = todo.pop(0)
        if run_id not in found:
            found.append(run_id)
            todo += guild_api.required_run_ids(guild_home, run_id)
    return found


def check_size(
    upstream: tuple[UpstreamRun, ...], guild_home: str, cluster: ClusterConfig
) -> None:
    """Raises ClusterError when a required run, with the runs it requires, is
    more than the remote's size policy lets travel to a node."""
    limit = cluster.max_copy_mb * 2**20
    seen = set()
    for run in upstream:
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        ids = _with_required([run.run_id], guild_home)
        size = sum(_tree_size(guild_api.run_dir(guild_home, i)) for i in ids)
        if size > limit:
            with_others = " with the runs it requires" if len(ids) > 1 else ""
            raise ClusterError(
                f"run {run.run_id[:8]} ({run.op}), which step {run.step} requires, "
                f"is {_mb(size)}{with_others}, over max-copy-mb "
                f"({cluster.max_copy_mb:g} MB) of remote '{cluster.name}': raise "
                "max-copy-mb there to send it to the nodes, or pin a smaller run "
                f"with `{run.flag}: RUN_ID` in the space"
            )


def _tree_size(path: str) -> int:
    """Bytes of the regular files under `path` (links not followed)."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


# --- To the nodes -------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamBundle:
    """The required runs, packed once on the driver and put in Ray's object
    store: each node fetches them once (see `install`)."""

    run_ids: tuple[str, ...]
    packed: Any
    """Ray ObjectRef of `pack`'s bytes."""


def pack(guild_home: str, run_ids: list[str]) -> bytes:
    """The runs' directories as one tar. A link to a file of one of these runs
    (Guild links a dependency's files so with `target-type: link`) becomes
    relative, so that it holds where the runs land on a node."""
    runs = os.path.realpath(guild_api.runs_dir(guild_home))
    sent = {os.path.join(runs, run_id) for run_id in run_ids}

    def relative_links(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if info.issym():
            where = os.path.dirname(os.path.join(runs, info.name))
            target = os.path.realpath(os.path.join(where, info.linkname))
            if any(target.startswith(run + os.sep) for run in sent):
                info.linkname = os.path.relpath(target, where)
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for run_id in run_ids:
            tar.add(os.path.join(runs, run_id), run_id, filter=relative_links)
    return buf.getvalue()


def install(home: str, bundle: UpstreamBundle) -> None:
    """On a node: puts the required runs into the tune's Guild home there,
    unless an earlier trial on the node has. Trials on one node may do this
    at once: each unpacks aside, then renames run by run (the first wins)."""
    runs = guild_api.runs_dir(home)
    missing = [i for i in bundle.run_ids if not os.path.isdir(os.path.join(runs, i))]
    if not missing:
        return
    import ray

    data = ray.get(bundle.packed)
    os.makedirs(runs, exist_ok=True)
    aside = tempfile.mkdtemp(prefix=".upstream-", dir=home)
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(aside, filter="tar")
        for run_id in missing:
            with contextlib.suppress(OSError):  # another trial was first
                os.rename(os.path.join(aside, run_id), os.path.join(runs, run_id))
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def remove_installed(home: str, run_ids: tuple[str, ...]) -> None:
    """On a node, at the end of the tune: the required runs it was sent."""
    for run_id in run_ids:
        shutil.rmtree(guild_api.run_dir(home, run_id), ignore_errors=True)
