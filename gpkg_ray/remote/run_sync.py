"""Step runs made on a cluster's node come home to the driver's GUILD_HOME.

A trial on a node runs its steps in a Guild home of that node's own
(`node_guild_home`). Its `RunSender` sends what changed in each run's
directory, every few seconds while the run goes and once more when it has
ended, to the `RunCollector`, which lives on the driver's node and writes the
files into the driver's GUILD_HOME. Nothing needs a filesystem shared by the
nodes; the bytes travel as Ray task arguments.

What the driver's copy says:
- while the run goes on the node: status `running` (Guild's `LOCK.remote`
  file, holding the cluster's name, as for Guild's own remote runs);
- once it ended: the run's own status, attrs, output, scalars and files;
- `ray_node`: the node that ran it (IP, host name, Ray node id, its directory
  there);
- when its trial's node died first: status `error`, attr `ray_node_lost`.

Size policy: a file of the run larger than the remote's `max-copy-mb` stays
on the node and is named in the run's `ray_files_left_on_node` attr, and the
run's directory stays there; a symlink to a file outside its run is not
followed (Guild links resources that way). Guild's own files of the run
(`.guild/`: attrs, output, scalars) always come home.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field

from gpkg_ray import guild_api

REMOTE_LOCK = os.path.join(".guild", "LOCK.remote")
SKIPPED = {os.path.join(".guild", "LOCK"), REMOTE_LOCK}
"""The node's run lock holds a pid of that node: meaningless here."""

EXIT_STATUS_NODE_LOST = 1
"""Written for a run whose node died: Guild shows a positive status as `error`."""

SYNC_SECONDS = 5.0
"""How often a running step's changes are sent (a dead node loses at most
this much of a run's output)."""


def node_home_name(tune_run_id: str) -> str:
    return f"gpkg-ray-runs-{tune_run_id}"


def node_guild_home(tune_run_id: str) -> str:
    """The Guild home of a tune's trials on the node this process runs on
    (made if needed)."""
    home = os.path.join(tempfile.gettempdir(), node_home_name(tune_run_id))
    os.makedirs(home, exist_ok=True)
    return home


@dataclass(frozen=True)
class NodeInfo:
    ip: str
    hostname: str
    node_id: str

    @classmethod
    def here(cls) -> NodeInfo:
        import ray

        return cls(
            ray.util.get_node_ip_address(),
            socket.gethostname(),
            ray.get_runtime_context().get_node_id(),
        )


@dataclass
class RunFiles:
    """What changed in a run since the last sync, as sent to the collector."""

    run_id: str
    node_run_dir: str
    ended: bool
    files: list[tuple[str, bytes, float]] = field(default_factory=list)
    """(path in the run, content, mtime)"""
    links: list[tuple[str, str]] = field(default_factory=list)
    """(path in the run, target in the run)"""
    left: list[str] = field(default_factory=list)
    """Paths in the run of files that stay on the node, with their size."""
    removed: list[str] = field(default_factory=list)
    """Paths in the run that are gone on the node (Guild's PENDING, say)."""


class RunSender:
    """In a trial's actor: sends the changes of its runs to the collector."""

    def __init__(self, collector, guild_home: str, max_copy_bytes: int):
        self.collector = collector
        self.guild_home = guild_home
        self.max_copy_bytes = max_copy_bytes
        self.node = NodeInfo.here()
        self._seen: dict[str, dict[str, tuple[int, int]]] = {}
        self._ended: set[str] = set()
        self._last_sync = 0.0

    def sync(
        self, trial_id: str, runs: list[str], running: str | None, force: bool = False
    ) -> None:
        """Sends the changes of `runs`: every ended run once more, completely,
        and the `running` one at most every SYNC_SECONDS unless `force`.
        Waits until the collector has written them."""
        now = time.monotonic()
        due = force or now - self._last_sync >= SYNC_SECONDS
        batch = []
        for run_id in runs:
            if run_id in self._ended:
                continue
            ended = run_id != running
            if not os.path.isdir(self._run_dir(run_id)):
                if ended:  # Guild never made it (`guild run` failed first)
                    self._ended.add(run_id)
                continue
            if ended or due:
                batch.append(self._changes(run_id, ended))
            if ended:
                self._ended.add(run_id)
        if batch:
            import ray

            ray.get(self.collector.receive.remote(trial_id, self.node, batch))
            self._last_sync = now

    def remove_runs(self, runs: list[str]) -> None:
        """Removes ended runs from the node, except those with files left there."""
        for run_id in runs:
            if run_id in self._ended and not self._kept(run_id):
                shutil.rmtree(self._run_dir(run_id), ignore_errors=True)

    def _kept(self, run_id: str) -> bool:
        return any(
            size > self.max_copy_bytes and not _is_guild_file(rel)
            for rel, (size, _) in self._seen.get(run_id, {}).items()
        )

    def _run_dir(self, run_id: str) -> str:
        return guild_api.run_dir(self.guild_home, run_id)

    def _changes(self, run_id: str, ended: bool) -> RunFiles:
        run_dir = self._run_dir(run_id)
        seen = self._seen.setdefault(run_id, {})
        changes = RunFiles(run_id, run_dir, ended)
        present = set()
        for path in _run_files(run_dir):
            rel = os.path.relpath(path, run_dir)
            try:
                stat = os.lstat(path)
            except FileNotFoundError:  # Guild removed it meanwhile
                continue
            present.add(rel)
            state = (stat.st_size, stat.st_mtime_ns)
            if seen.get(rel) == state:
                continue
            seen[rel] = state
            self._add(changes, run_dir, rel, path, stat)
        changes.removed = sorted(set(seen) - present)
        for rel in changes.removed:
            del seen[rel]
        return changes

    def _add(self, changes: RunFiles, run_dir: str, rel: str, path: str, stat) -> None:
        if os.path.islink(path):
            target = os.path.realpath(path)
            if target.startswith(os.path.realpath(run_dir) + os.sep):
                changes.links.append(
                    (rel, os.path.relpath(target, os.path.dirname(path)))
                )
            else:
                changes.left.append(f"{rel} (a link to {target})")
        elif stat.st_size > self.max_copy_bytes and not _is_guild_file(rel):
            changes.left.append(f"{rel} ({_size_text(stat.st_size)})")
        else:
            with open(path, "rb") as f:
                changes.files.append((rel, f.read(), stat.st_mtime))


def _is_guild_file(rel: str) -> bool:
    """Guild's own files of a run (attrs, output, scalars) always come home."""
    return rel.startswith(".guild" + os.sep)


def _size_text(size: int) -> str:
    if size < 2**20:
        return f"{size} bytes"
    return f"{size / 2**20:.0f} MB"


def _run_files(run_dir: str) -> list[str]:
    paths = []
    for root, dirs, names in os.walk(run_dir):
        # A linked directory is sent as a link (or named as left), not walked.
        linked = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in linked]
        for name in names + linked:
            path = os.path.join(root, name)
            if os.path.relpath(path, run_dir) not in SKIPPED:
                paths.append(path)
    return paths


class RunCollector:
    """On the driver's node: writes the runs that nodes send into GUILD_HOME.

    Run as a Ray actor (the engine places it on the driver's node); keeps which
    runs are still open per trial, so that a trial whose node died has its runs
    closed as `error` instead of left `running`.
    """

    def __init__(self, guild_home: str, cluster_name: str):
        self.guild_home = guild_home
        self.cluster_name = cluster_name
        self._open: dict[str, set[str]] = {}
        self._closed: set[str] = set()
        """Runs closed as lost: what their node sends later is not theirs to
        change (a node Ray gave up on may still be running)."""

    def receive(self, trial_id: str, node: NodeInfo, batch: list[RunFiles]) -> None:
        for changes in batch:
            self._write(trial_id, node, changes)

    def close_trial(self, trial_id: str, reason: str) -> list[str]:
        """Ends the runs of `trial_id` that never ended on their node; returns
        their ids."""
        closed = sorted(self._open.pop(trial_id, set()))
        self._closed.update(closed)
        for run_id in closed:
            guild_api.close_run(
                self._run(run_id),
                EXIT_STATUS_NODE_LOST,
                keep_ended=True,
                attrs={"ray_node_lost": reason},
            )
        return closed

    def close_all(self, reason: str) -> list[str]:
        return [
            run_id
            for trial_id in list(self._open)
            for run_id in self.close_trial(trial_id, reason)
        ]

    def _run(self, run_id: str) -> guild_api.Run:
        return guild_api.open_run(self.guild_home, run_id)

    def _write(self, trial_id: str, node: NodeInfo, changes: RunFiles) -> None:
        if changes.run_id in self._closed:
            return
        run = self._run(changes.run_id)
        lock = os.path.join(run.dir, REMOTE_LOCK)
        first = not os.path.exists(run.dir)
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        if first:
            _write_text(lock, self.cluster_name)
            self._open.setdefault(trial_id, set()).add(changes.run_id)
        for rel, content, mtime in changes.files:
            _write_file(os.path.join(run.dir, rel), content, mtime)
        for rel, target in changes.links:
            _write_link(os.path.join(run.dir, rel), target)
        for rel in changes.removed:
            _remove(os.path.join(run.dir, rel))
        run.write_attr(
            "ray_node",
            {
                "ip": node.ip,
                "hostname": node.hostname,
                "node_id": node.node_id,
                "run_dir": changes.node_run_dir,
            },
        )
        if changes.left:
            left = sorted(
                set(run.get("ray_files_left_on_node") or []) | set(changes.left)
            )
            run.write_attr("ray_files_left_on_node", left)
        if changes.ended:
            _remove(lock)
            self._open.get(trial_id, set()).discard(changes.run_id)


def _write_file(path: str, content: bytes, mtime: float) -> None:
    """Replaces `path` at once: a reader never sees half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.gpkg-ray-tmp"
    with open(tmp, "wb") as f:
        f.write(content)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def _write_link(path: str, target: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _remove(path)
    os.symlink(target, path)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
