"""Step runs made on a cluster's node come home to the driver's GUILD_HOME.

A trial on a node runs its steps in a Guild home of that node's own
(`node_guild_home`: private to the user, cleared of an earlier attempt's runs
when the tune starts). Its `RunSender` sends what changed in each run's
directory, every few seconds while the run goes and once more when it has
ended, to the `RunCollector`, which lives on the driver's node and writes the
files into the driver's GUILD_HOME. Nothing needs a filesystem shared by the
nodes; the bytes travel as Ray task arguments.

What a sync sends, per run (`RunFiles`): the paths gone since the last sync,
then an `Entry` for each path that is new or changed: a directory, a link
(its target, relative, when it points inside the run) or a file's bytes from
an offset (a file that grew sends only its new bytes). A sync is split into
batches of at most SYNC_BATCH_BYTES of file data.

Nothing a node sends is trusted: the step's own code runs there. The collector
takes only run ids Guild makes that are new in GUILD_HOME (then the run is
this tune's, and its trial's), and paths in the run without `..`; it applies
removals and type changes before writes, writes through no link
(`run_tree`), and makes a link only when its target stays inside the run.

What the driver's copy says:
- while the run goes on the node: status `running` (Guild's `LOCK.remote`
  file, holding the cluster's name, as for Guild's own remote runs);
- once it ended: the run's own status, attrs, output, scalars and files;
- where it ran, as of the driver: its opref names the project's Guild file
  here, its attrs `env` and `op` the project dir and GUILD_HOME here (not
  the copy in Ray's working dir, gone with the cluster): Guild shows and
  resolves it as a run of the project (RunCollector._relocate);
- `ray_node`: the node that ran it (IP, host name, Ray node id, its directory
  there);
- `ray_files_left_on_node`: what of the run is not here, each as
  "path (why)";
- when its trial's node died first: status `error`, attr `ray_node_lost`.

Size policy: a file of the run larger than the remote's `max-copy-mb` stays
on the node, and so does the run's directory. Guild's own files of the run
(`.guild/`: attrs, output, scalars) always come home, but an output larger
than that (or than OUTPUT_TAIL_BYTES) comes as its last lines, after a line
saying how much was left out. A link to a file outside its run is not
followed (Guild links resources that way); a FIFO, socket or device is not
read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gpkg_ray import guild_api
from gpkg_ray.remote.run_tree import TMP_SUFFIX, Refused, RunTree

log = logging.getLogger(__name__)

REMOTE_LOCK = os.path.join(".guild", "LOCK.remote")
SKIPPED = {os.path.join(".guild", "LOCK"), REMOTE_LOCK}
"""The node's run lock holds a pid of that node: meaningless here."""

EXIT_STATUS_NODE_LOST = 1
"""Written for a run whose node died: Guild shows a positive status as `error`."""

SYNC_SECONDS = 5.0
"""How often a running step's changes are sent (a dead node loses at most
this much of a run's output)."""

SYNC_BATCH_BYTES = 8 * 2**20
"""Most file bytes in one message to the collector: what it holds at once."""

OUTPUT = ".guild/output"
OUTPUT_INDEX = ".guild/output.index"
"""Guild's index of the output: 9 bytes (time, stream) per line."""
OUTPUT_TAIL_BYTES = 2**20
OUTPUT_TAIL_LINES = 10_000
"""An output over `max-copy-mb` (and over OUTPUT_TAIL_BYTES) comes home as its
last lines, at most this many bytes and lines."""

CHECK_BYTES = 4096
"""A file that grew is sent as its new bytes when its last CHECK_BYTES sent
are unchanged; otherwise whole."""

KEPT_RUNS = "kept-runs"
"""In a node's Guild home: ids of the runs kept there by the size policy,
which a restart of the tune leaves in place."""

RUN_ID = re.compile(r"[0-9a-f]{32}")
"""The run ids gpkg.ray gives Guild (`trial.step_run.new_run_id`)."""

FILE, DIR, LINK = "file", "dir", "link"
_LEFT = "left"  # a path named in ray_files_left_on_node, not sent


# --- The node's Guild home ----------------------------------------------------


class NodeHomeError(Exception):
    """The tune's Guild home on a node is not private: one line, with the fix."""


def node_home_name(tune_run_id: str) -> str:
    return f"gpkg-ray-runs-{tune_run_id}"


def node_home_path(tune_run_id: str) -> str:
    return os.path.join(tempfile.gettempdir(), node_home_name(tune_run_id))


def node_guild_home(tune_run_id: str) -> str:
    """The Guild home of a tune's trials on the node this process runs on:
    made if needed, and checked private (a directory of this user, mode 0700,
    not a link), as the temp dir is shared by the node's users."""
    home = node_home_path(tune_run_id)
    with contextlib.suppress(FileExistsError):
        os.mkdir(home, 0o700)
    _check_private(home)
    return home


def _check_private(home: str) -> None:
    st = os.lstat(home)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problem = "is a link" if stat.S_ISLNK(st.st_mode) else "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"belongs to uid {st.st_uid}, not to this user ({os.getuid()})"
    elif st.st_mode & 0o022:
        problem = f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    else:
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(home, 0o700)
        return
    raise NodeHomeError(
        f"the tune's Guild home on node {socket.gethostname()}, {home}, {problem}: "
        "remove it there, then run the tune again"
    )


def clear_node_home(tune_run_id: str) -> None:
    """On a node, before the tune's trials start there: removes the runs an
    earlier attempt of the tune left in its Guild home, except those kept by
    the size policy (KEPT_RUNS). A home that is not private is left alone:
    its trials fail with NodeHomeError."""
    home = node_home_path(tune_run_id)
    try:
        _check_private(home)
    except (FileNotFoundError, NodeHomeError):
        return
    kept = _kept_runs(home)
    runs = guild_api.runs_dir(home)
    with contextlib.suppress(FileNotFoundError), os.scandir(runs) as entries:
        for entry in list(entries):
            if entry.name in kept:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def _kept_runs(home: str) -> set[str]:
    try:
        with open(os.path.join(home, KEPT_RUNS)) as f:
            return set(f.read().split())
    except FileNotFoundError:
        return set()


def _record_kept(home: str, run_id: str) -> None:
    # One short line with O_APPEND: trials on the node may write at once.
    fd = os.open(
        os.path.join(home, KEPT_RUNS),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
        0o600,
    )
    try:
        os.write(fd, f"{run_id}\n".encode())
    finally:
        os.close(fd)


# --- What travels -------------------------------------------------------------


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


@dataclass(frozen=True)
class Entry:
    """A path of a run as it is on the node: new, changed, or of a new kind."""

    path: str
    """In the run, `/`-separated."""
    kind: str
    """FILE, DIR or LINK."""
    target: str = ""
    """LINK: where it points, relative to its directory."""
    offset: int = 0
    """FILE: where `data` goes; 0 starts a new copy of the file."""
    data: bytes = b""
    size: int = 0
    """FILE: the copy's size once all its bytes are there."""
    mtime: float = 0.0


@dataclass
class RunFiles:
    """One run's part of a sync batch: applied in this order."""

    run_id: str
    node_run_dir: str
    ended: bool
    """The run has ended and this is the last of it."""
    removed: list[str] = field(default_factory=list)
    """Paths gone from the run on the node, or no longer sent."""
    entries: list[Entry] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)
    """(path, why) of what is not sent."""


Deliver = Callable[[str, NodeInfo, list[RunFiles]], list[tuple[str, str]]]
"""Sends a batch to the collector, waits until it is written; returns the
(run id, path) of files to send whole next time (see RunCollector.receive)."""


def deliver_to(collector) -> Deliver:
    """Delivery to the collector actor."""

    def deliver(trial_id: str, node: NodeInfo, batch: list[RunFiles]):
        import ray

        return ray.get(collector.receive.remote(trial_id, node, batch))

    return deliver


# --- The node's side ----------------------------------------------------------


@dataclass
class _Seen:
    """A path as the collector has it (or as named, for _LEFT)."""

    kind: str
    ino: int = 0
    size: int = 0
    """FILE: the bytes the collector has."""
    mtime_ns: int = 0
    target: str = ""
    """LINK: its target; _LEFT: why."""
    check: bytes = b""
    """FILE: digest of the last CHECK_BYTES the collector has."""


@dataclass
class _RunState:
    seen: dict[str, _Seen] = field(default_factory=dict)
    kept: bool = False
    """Something stays on the node: so does the run's directory."""
    output_cut: bool = False


@dataclass
class _Read:
    """A file's bytes to send, from `start` to `end`: read from `path`, or
    `inline` (the output's tail)."""

    rel: str
    path: str
    start: int
    end: int
    seen: _Seen
    mtime: float
    inline: bytes | None = None


@dataclass
class _Plan:
    files: RunFiles
    reads: list[_Read]
    state: _RunState


class RunSender:
    """In a trial's actor: sends the changes of its runs to the collector."""

    def __init__(
        self,
        deliver: Deliver,
        guild_home: str,
        max_copy_bytes: int,
        node: NodeInfo,
        batch_bytes: int = SYNC_BATCH_BYTES,
    ):
        self.deliver = deliver
        self.guild_home = guild_home
        self.max_copy_bytes = max_copy_bytes
        self.node = node
        self.batch_bytes = batch_bytes
        self._states: dict[str, _RunState] = {}
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
        plans = []
        for run_id in runs:
            if run_id in self._ended:
                continue
            ended = run_id != running
            if not os.path.isdir(self._run_dir(run_id)):
                if ended:  # Guild never made it (`guild run` failed first)
                    self._ended.add(run_id)
                continue
            if ended or due:
                plans.append(self._scan(run_id, ended))
            if ended:
                self._ended.add(run_id)
        if not plans:
            return
        for batch in self._batches(plans):
            for run_id, rel in self.deliver(trial_id, self.node, batch) or []:
                # The collector's copy is not what we think: whole next time.
                self._states[run_id].seen.pop(rel, None)
        self._last_sync = now

    def remove_runs(self, runs: list[str]) -> None:
        """Removes ended runs from the node, except those with files left there."""
        for run_id in runs:
            state = self._states.get(run_id)
            if run_id in self._ended and not (state and state.kept):
                shutil.rmtree(self._run_dir(run_id), ignore_errors=True)

    def _run_dir(self, run_id: str) -> str:
        return guild_api.run_dir(self.guild_home, run_id)

    def _scan(self, run_id: str, ended: bool) -> _Plan:
        run_dir = self._run_dir(run_id)
        state = self._states.setdefault(run_id, _RunState())
        plan = _Plan(RunFiles(run_id, run_dir, ended), [], state)
        tree = dict(_walk(run_dir))
        state.output_cut = state.output_cut or self._output_too_big(tree)
        for rel, st in sorted(tree.items()):
            if not (state.output_cut and rel in (OUTPUT, OUTPUT_INDEX)):
                self._scan_path(plan, run_dir, rel, st)
        if state.output_cut and OUTPUT in tree:
            self._scan_output(plan, run_dir, tree)
        gone = [rel for rel in state.seen if rel not in tree]
        plan.files.removed += [rel for rel in gone if state.seen[rel].kind != _LEFT]
        plan.files.removed.sort()
        for rel in gone:
            del state.seen[rel]
        return plan

    def _scan_path(self, plan: _Plan, run_dir: str, rel: str, st) -> None:
        seen = plan.state.seen
        prev = seen.get(rel)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if prev is None or prev.kind != DIR:
                plan.files.entries.append(Entry(rel, DIR))
                seen[rel] = _Seen(DIR)
        elif stat.S_ISLNK(mode):
            path = os.path.join(run_dir, rel)
            real = os.path.realpath(path)
            run_real = os.path.realpath(run_dir)
            if real.startswith(run_real + os.sep):
                target = os.path.relpath(
                    real, os.path.dirname(os.path.join(run_real, rel))
                )
                if prev is None or (prev.kind, prev.target) != (LINK, target):
                    plan.files.entries.append(Entry(rel, LINK, target=target))
                    seen[rel] = _Seen(LINK, target=target)
            else:
                self._leave(plan, rel, f"a link to {real}")
        elif not stat.S_ISREG(mode):
            self._leave(plan, rel, f"{_special_kind(mode)}: not sent")
        elif st.st_size > self.max_copy_bytes and not _is_guild_file(rel):
            self._leave(plan, rel, _size_text(st.st_size), keep=True)
        else:
            read = self._file_read(prev, os.path.join(run_dir, rel), rel, st)
            if read is not None:
                plan.reads.append(read)

    def _leave(self, plan: _Plan, rel: str, why: str, keep: bool = False) -> None:
        """Names `rel` as not sent (once per reason); a copy sent before goes."""
        prev = plan.state.seen.get(rel)
        if prev is not None and prev.kind == _LEFT and prev.target == why:
            return
        if prev is not None and prev.kind != _LEFT:
            plan.files.removed.append(rel)
        plan.files.left.append((rel, why))
        plan.state.seen[rel] = _Seen(_LEFT, target=why)
        if keep:
            self._keep(plan)

    def _keep(self, plan: _Plan) -> None:
        if not plan.state.kept:
            plan.state.kept = True
            _record_kept(self.guild_home, plan.files.run_id)

    @staticmethod
    def _file_read(prev: _Seen | None, path: str, rel: str, st) -> _Read | None:
        """What to send of a regular file: nothing when the collector has it,
        the new bytes when it only grew, else all of it."""
        start = 0
        if prev is not None and prev.kind == FILE and prev.ino == st.st_ino:
            if (prev.size, prev.mtime_ns) == (st.st_size, st.st_mtime_ns):
                return None
            if st.st_size > prev.size and _digest(path, prev.size) == prev.check:
                start = prev.size
        seen = _Seen(FILE, st.st_ino, st.st_size, st.st_mtime_ns)
        return _Read(rel, path, start, st.st_size, seen, st.st_mtime)

    def _output_too_big(self, tree: dict) -> bool:
        limit = max(self.max_copy_bytes, OUTPUT_TAIL_BYTES)
        return any(
            rel in tree
            and stat.S_ISREG(tree[rel].st_mode)
            and tree[rel].st_size > limit
            for rel in (OUTPUT, OUTPUT_INDEX)
        )

    def _scan_output(self, plan: _Plan, run_dir: str, tree: dict) -> None:
        """The output, once too big: its tail and a line on what was left out,
        sent whole again when it changed (at most OUTPUT_TAIL_BYTES)."""
        out, index = tree[OUTPUT], tree.get(OUTPUT_INDEX)
        stamp = (out.st_size, out.st_mtime_ns, index.st_size if index else 0)
        seen = plan.state.seen
        prev = seen.get(OUTPUT)
        if prev is not None and prev.target == repr(stamp):
            return
        try:
            text, text_index, kept = _output_tail(run_dir)
        except (OSError, ValueError):  # gone, or not a regular file any more
            return
        for rel, data in ((OUTPUT, text), (OUTPUT_INDEX, text_index)):
            seen[rel] = _Seen(FILE, target=repr(stamp))
            plan.reads.append(
                _Read(rel, "", 0, len(data), seen[rel], out.st_mtime, inline=data)
            )
        why = f"{_size_text(out.st_size)}; its last {_size_text(kept)} came home"
        plan.files.left.append((OUTPUT, why))
        self._keep(plan)

    def _batches(self, plans: list[_Plan]) -> Iterator[list[RunFiles]]:
        """The plans' changes in batches of at most `batch_bytes` of file data;
        a run's `ended` goes with its last part."""
        batch: list[RunFiles] = []
        room = self.batch_bytes
        for plan in plans:
            part = plan.files
            # What is not sent goes with the run's last part: after the bytes
            # of the output's tail, which is both sent and named.
            left, ended = part.left, part.ended
            part.left, part.ended = [], False
            for read in plan.reads:
                pos = read.start
                with _reading(read) as fd:
                    while True:
                        if room == 0:
                            batch.append(part)
                            yield batch
                            batch, room = [], self.batch_bytes
                            part = RunFiles(part.run_id, part.node_run_dir, False)
                        n = min(read.end - pos, room)
                        data = _read_at(read, fd, pos, n)
                        if len(data) < n:  # it shrank or went: whole next time
                            plan.state.seen.pop(read.rel, None)
                            break
                        part.entries.append(
                            Entry(read.rel, FILE, "", pos, data, read.end, read.mtime)
                        )
                        room -= n
                        pos += n
                        if pos >= read.end:
                            if fd is not None:
                                read.seen.check = _digest_fd(fd, read.end)
                            plan.state.seen[read.rel] = read.seen
                            break
            part.left, part.ended = left, ended
            batch.append(part)
        if batch:
            yield batch


def _walk(run_dir: str) -> Iterator[tuple[str, os.stat_result]]:
    """(path in the run, lstat) of everything in `run_dir`; no link is followed."""
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(run_dir, rel_dir)))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if rel in SKIPPED:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # Guild removed it meanwhile
                continue
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                pending.append(rel)


def _open_regular(path: str) -> int:
    """Opens a regular file for reading; never blocks (a FIFO put there since
    the scan) nor follows a link. ValueError if it is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a regular file")
    return fd


@contextlib.contextmanager
def _reading(read: _Read) -> Iterator[int | None]:
    if read.inline is not None:
        yield None
        return
    try:
        fd = _open_regular(read.path)
    except (OSError, ValueError):
        yield None  # _read_at reads nothing: it is sent whole next time
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _read_at(read: _Read, fd: int | None, pos: int, n: int) -> bytes:
    if read.inline is not None:
        return read.inline[pos : pos + n]
    if fd is None:
        return b""
    data = os.pread(fd, n, pos)
    while len(data) < n:  # pread may return less than asked of a regular file
        more = os.pread(fd, n - len(data), pos + len(data))
        if not more:
            break
        data += more
    return data


def _digest_fd(fd: int, end: int) -> bytes:
    start = max(0, end - CHECK_BYTES)
    return hashlib.blake2b(os.pread(fd, end - start, start), digest_size=16).digest()


def _digest(path: str, end: int) -> bytes:
    try:
        fd = _open_regular(path)
    except (OSError, ValueError):
        return b""
    try:
        return _digest_fd(fd, end)
    finally:
        os.close(fd)


def _output_tail(run_dir: str) -> tuple[bytes, bytes, int]:
    """The output's last lines (at most OUTPUT_TAIL_BYTES and _LINES) after a
    line saying how much is left out, Guild's index to match (an entry per
    line), and the size of those last lines."""
    fd = _open_regular(os.path.join(run_dir, OUTPUT))
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - OUTPUT_TAIL_BYTES)
        tail = os.pread(fd, size - start, start)
    finally:
        os.close(fd)
    tail = tail[_first_line_kept(tail, whole=start == 0) :]
    index, left_lines = _index_tail(run_dir, tail.count(b"\n"))
    # The note's index entry: the time of the first line kept, on stderr.
    first_time = struct.unpack("!Q", index[:8])[0] if index else 0
    note = (
        f"[gpkg.ray: the first {size - len(tail)} bytes ({left_lines} lines) of "
        "this output are left out here: the whole output stayed on the node, "
        "see the run's ray_node attr]\n"
    ).encode()
    return note + tail, struct.pack("!QB", first_time, 1) + index, len(tail)


def _first_line_kept(tail: bytes, whole: bool) -> int:
    """Where the lines kept of `tail` start: at most OUTPUT_TAIL_LINES
    before its end, and after its first, cut, line unless it is the `whole`
    output (or that line is all there is)."""
    begin = 0
    first = tail.find(b"\n")
    if not whole and 0 <= first < len(tail) - 1:
        begin = first + 1
    pos = len(tail) - 1 if tail.endswith(b"\n") else len(tail)
    for _ in range(OUTPUT_TAIL_LINES):
        pos = tail.rfind(b"\n", 0, pos)
        if pos < 0:
            return begin
    return max(begin, pos + 1)


def _index_tail(run_dir: str, lines: int) -> tuple[bytes, int]:
    """The last `lines` entries of the output's index, and how many are before."""
    try:
        fd = _open_regular(os.path.join(run_dir, OUTPUT_INDEX))
    except (OSError, ValueError):
        return b"", 0
    try:
        entries = os.fstat(fd).st_size // 9
        kept = min(entries, lines)
        return os.pread(fd, 9 * kept, 9 * (entries - kept)), entries - kept
    finally:
        os.close(fd)


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _is_guild_file(rel: str) -> bool:
    """Guild's own files of a run (attrs, output, scalars) always come home."""
    return rel.startswith(".guild/")


def _size_text(size: int) -> str:
    if size < 2**20:
        return f"{size} bytes"
    return f"{size / 2**20:.0f} MB"


# --- The driver's side --------------------------------------------------------

OPREF = ".guild/opref"
RELOCATED = {OPREF, ".guild/attrs/env", ".guild/attrs/op"}
"""Guild's files of a run that name where it ran: see RunCollector._relocate."""
RELOCATED_MAX_BYTES = 2**20

_KIND_ORDER = {DIR: 0, FILE: 1, LINK: 2}
"""Directories before what goes in them; links last, to what they point to."""

_GUILD_DIRS = ([".guild"], [".guild", "attrs"])
"""Directories the collector writes in: a node may not remove them or make
them anything else."""


class RunCollector:
    """On the driver's node: writes the runs that nodes send into GUILD_HOME.

    Run as a Ray actor (the engine places it on the driver's node); keeps which
    runs are this tune's (those it made) and of which trial, and which are
    still open per trial, so that a trial whose node died has its runs closed
    as `error` instead of left `running`.
    """

    def __init__(
        self,
        guild_home: str,
        cluster_name: str,
        project_dir: str | None = None,
        batch_dir: str | None = None,
    ):
        """`project_dir`: the project the driver's tune runs from; the runs
        are written as runs of its Guild file (see `_relocate`). `batch_dir`:
        the Guild batch run whose trials the runs are, linked from it as Guild
        links a batch's trials (see remote.batch_proto)."""
        self.guild_home = guild_home
        self.batch_dir = batch_dir
        self.cluster_name = cluster_name
        self.project_dir = project_dir
        self._node_dirs: dict[str, str] = {}
        """Run id -> the project dir on its node (its opref named)."""
        self._trial_of: dict[str, str] = {}
        """Run id -> its trial, for the runs this collector made."""
        self._open: dict[str, set[str]] = {}
        self._closed: set[str] = set()
        """Runs ended, or closed as lost: what their node sends later is not
        theirs to change (a node Ray gave up on may still be running)."""
        self._left: dict[str, dict[str, str]] = {}
        """Per run: path -> why it is not here (ray_files_left_on_node)."""
        self._partial: set[tuple[str, str]] = set()
        """(run id, path) of files whose new copy is still coming."""
        self.refused: list[str] = []
        """What this collector refused to write, as logged."""

    def receive(
        self, trial_id: str, node: NodeInfo, batch: list[RunFiles]
    ) -> list[tuple[str, str]]:
        """Writes `batch`; returns (run id, path) of the files to send whole
        next time (their copy here is not what the node took it for)."""
        resend: list[tuple[str, str]] = []
        for changes in batch if isinstance(batch, list) else []:
            if isinstance(changes, RunFiles):
                resend += self._write(str(trial_id), node, changes)
            else:
                self._refuse(f"trial {trial_id}: {type(changes).__name__}, not runs")
        return resend

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

    def _refuse(self, what: str) -> None:
        self.refused.append(what)
        log.warning("refused from a node: %s", what)

    def _write(
        self, trial_id: str, node: NodeInfo, changes: RunFiles
    ) -> list[tuple[str, str]]:
        run_id = changes.run_id
        if run_id in self._closed:
            return []
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            self._refuse(f"trial {trial_id}: {run_id!r} is not a run id of gpkg.ray")
            return []
        if self._trial_of.get(run_id, trial_id) != trial_id:
            self._refuse(f"trial {trial_id}: run {run_id} is another trial's")
            return []
        tree = self._open_tree(trial_id, run_id)
        if tree is None:
            return []
        try:
            resend = self._apply(tree, run_id, changes)
            self._relocate(tree, run_id, changes)
            self._write_state(tree, run_id, node, changes)
        finally:
            tree.close()
        if changes.ended is True:
            self._open.get(trial_id, set()).discard(run_id)
            self._closed.add(run_id)
        return resend

    def _open_tree(self, trial_id: str, run_id: str) -> RunTree | None:
        """The run's directory; made if this is the run's first sync. A run
        already in GUILD_HOME then is not this tune's: refused."""
        first = run_id not in self._trial_of
        try:
            tree = RunTree.open(
                guild_api.runs_dir(self.guild_home), run_id, create=first
            )
        except FileExistsError:
            self._refuse(
                f"trial {trial_id}: run {run_id} is in GUILD_HOME already, "
                "not a run of this tune"
            )
            return None
        except Refused as e:
            self._refuse(f"trial {trial_id}: {e}")
            return None
        if first:
            self._trial_of[run_id] = trial_id
            self._open.setdefault(trial_id, set()).add(run_id)
            if self.batch_dir is not None:
                from gpkg_ray.remote.batch_proto import link_trial

                link_trial(self.batch_dir, guild_api.runs_dir(self.guild_home), run_id)
        return tree

    def _apply(
        self, tree: RunTree, run_id: str, changes: RunFiles
    ) -> list[tuple[str, str]]:
        """Removals first, then directories, files and links: a path that
        changed kind is cleared before it is written."""
        left = self._left.setdefault(run_id, {})
        for rel in _list(changes.removed):
            parts = self._path(left, rel, None)
            if parts is not None:
                tree.remove(parts)
                left.pop(rel, None)
                self._partial.discard((run_id, rel))
        entries = []
        for entry in _list(changes.entries):
            problem = _entry_problem(entry)
            if problem:
                self._refuse_path(left, repr(getattr(entry, "path", entry)), problem)
                continue
            parts = self._path(left, entry.path, entry.kind)
            if parts is not None:
                entries.append((_KIND_ORDER[entry.kind], len(parts), entry, parts))
        resend = []
        for _, _, entry, parts in sorted(entries, key=lambda e: e[:2]):
            try:
                if not self._apply_entry(tree, run_id, entry, parts, left):
                    resend.append((run_id, entry.path))
            except Refused as e:
                self._refuse_path(left, entry.path, str(e))
        for item in _list(changes.left):
            if (
                isinstance(item, tuple)
                and len(item) == 2
                and all(isinstance(s, str) for s in item)
            ):
                left[item[0][:500]] = item[1][:500]
        return resend

    def _apply_entry(
        self,
        tree: RunTree,
        run_id: str,
        entry: Entry,
        parts: list[str],
        left: dict[str, str],
    ) -> bool:
        """Writes one entry; False when a file's bytes do not follow what is
        here (to be sent whole)."""
        if entry.kind == DIR:
            tree.make_dir(parts)
        elif entry.kind == LINK:
            if not tree.make_link(parts, entry.target):
                left[entry.path] = f"a link to {entry.target}, out of the run: not made"
                return True
        else:
            key = (run_id, entry.path)
            into_tmp = entry.offset == 0 or key in self._partial
            written = tree.write(
                parts, entry.data, entry.offset, entry.size, entry.mtime, into_tmp
            )
            complete = entry.offset + len(entry.data) >= entry.size
            if written and into_tmp and not complete:
                self._partial.add(key)
            else:
                self._partial.discard(key)
            if not written:
                return False
        left.pop(entry.path, None)
        return True

    def _path(self, left: dict[str, str], rel, kind: str | None) -> list[str] | None:
        """`rel` as parts of a path in the run, or None (refused) when it is
        not one a node may write (`kind`) or remove (None)."""
        if not isinstance(rel, str) or not rel or "\0" in rel or rel.startswith("/"):
            return self._refuse_path(left, repr(rel), "not a path in the run")
        parts = rel.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return self._refuse_path(left, rel, "not a plain path in the run")
        if parts[-1].endswith(TMP_SUFFIX):
            return self._refuse_path(left, rel, "a name gpkg.ray keeps for itself")
        own = os.path.join(*parts) in SKIPPED or (
            parts[:2] == [".guild", "attrs"] and parts[-1].startswith("ray_")
        )
        if own or (kind != DIR and parts in _GUILD_DIRS):
            return self._refuse_path(left, rel, "a file the driver writes itself")
        return parts

    def _refuse_path(self, left: dict[str, str], rel: str, why: str) -> None:
        self._refuse(f"{rel}: {why}")
        left[rel[:500]] = f"refused: {why}"
        return None

    def _relocate(self, tree: RunTree, run_id: str, changes: RunFiles) -> None:
        """Guild's files of the run that name where it ran, rewritten as of
        the driver once they came whole: the opref names the project's Guild
        file here (not the copy in Ray's working dir on the node, gone with
        the cluster), and the attrs `env` and `op` the project dir and Guild
        home here. So Guild shows and resolves the run as one of the project
        (`guild runs`, `compare`, `diff`, a later `guild run` requiring it).
        The node's copy now differs from this one: a later change of such a
        file is sent whole (see `_apply_entry`), and rewritten again."""
        if self.project_dir is None:
            return
        written = {
            entry.path
            for entry in _list(changes.entries)
            if isinstance(entry, Entry)
            and entry.path in RELOCATED
            and (run_id, entry.path) not in self._partial
        }
        attrs = written - {OPREF}
        if OPREF in written and self._relocate_opref(tree, run_id):
            attrs = RELOCATED - {OPREF}  # those that came before it too
        node_dir = self._node_dirs.get(run_id)
        if node_dir is None:
            return
        moves = {node_dir: self.project_dir}
        node_home = os.path.dirname(os.path.dirname(str(changes.node_run_dir)))
        if os.path.isabs(node_home) and node_home != os.sep:
            moves[node_home] = self.guild_home
        for rel in sorted(attrs):
            parts = rel.split("/")
            text = tree.read(parts, RELOCATED_MAX_BYTES)
            moved = (
                None
                if text is None
                else guild_api.relocated_attr(text.decode("utf-8", "replace"), moves)
            )
            if moved is not None:
                data = moved.encode()
                tree.write(parts, data, 0, len(data), time.time(), into_tmp=True)

    def _relocate_opref(self, tree: RunTree, run_id: str) -> bool:
        """Rewrites the run's opref; whether it named a project dir."""
        parts = OPREF.split("/")
        text = tree.read(parts, RELOCATED_MAX_BYTES)
        assert self.project_dir is not None
        found = (
            None
            if text is None
            else guild_api.relocated_opref(
                text.decode("utf-8", "replace"), self.project_dir
            )
        )
        if found is None:
            return False
        opref, node_dir = found
        self._node_dirs[run_id] = node_dir
        data = opref.encode()
        tree.write(parts, data, 0, len(data), time.time(), into_tmp=True)
        return True

    def _write_state(
        self, tree: RunTree, run_id: str, node: NodeInfo, changes: RunFiles
    ) -> None:
        """The collector's own files of the run: its lock while it runs on
        the node, and the attrs ray_node and ray_files_left_on_node."""
        for parts in _GUILD_DIRS:
            tree.make_dir(list(parts))
        lock = REMOTE_LOCK.split(os.sep)
        if changes.ended is True:
            tree.remove(lock)
        elif tree.kind(lock) is None:
            name = self.cluster_name.encode()
            tree.write(lock, name, 0, len(name), time.time(), into_tmp=True)
        run = self._run(run_id)
        run.write_attr(
            "ray_node",
            {
                "ip": str(getattr(node, "ip", "")),
                "hostname": str(getattr(node, "hostname", "")),
                "node_id": str(getattr(node, "node_id", "")),
                "run_dir": str(changes.node_run_dir),
            },
        )
        left = sorted(f"{rel} ({why})" for rel, why in self._left[run_id].items())
        if left != (run.get("ray_files_left_on_node") or []):
            if left:
                run.write_attr("ray_files_left_on_node", left)
            else:
                run.del_attr("ray_files_left_on_node")


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _entry_problem(entry) -> str | None:
    """Why `entry` is not one a node may send, if it is not."""
    if not isinstance(entry, Entry):
        return f"{type(entry).__name__}, not an entry"
    if entry.kind not in _KIND_ORDER:
        return f"unknown kind {entry.kind!r}"
    if entry.kind == LINK and not isinstance(entry.target, str):
        return "a link without a target"
    if entry.kind == FILE:
        numbers = (entry.offset, entry.size)
        if not isinstance(entry.data, bytes) or not all(
            isinstance(n, int) and n >= 0 for n in numbers
        ):
            return "a file without bytes, offset or size"
        if entry.offset + len(entry.data) > entry.size:
            return "a file's bytes past its size"
        if not isinstance(entry.mtime, (int, float)) or not math.isfinite(entry.mtime):
            return "a file without a time"
    return None
