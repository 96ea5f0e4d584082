"""Runs coming home from a cluster's node (gpkg_ray.remote.run_sync), in process:
the node's RunSender and the driver's RunCollector on temp dirs, each batch
pickled on its way as Ray would. What a step's code can leave in its run dir,
or what a node's process can send, must not make the driver write outside the
run, hang the sender, fail the trial or re-send whole files."""

from __future__ import annotations

import os
import pickle
import socket
import stat
import struct
import tempfile
import threading
import tracemalloc
from pathlib import Path

import pytest

from gpkg_ray.remote import run_sync
from gpkg_ray.remote.run_sync import (
    DIR,
    FILE,
    LINK,
    OUTPUT_TAIL_BYTES,
    OUTPUT_TAIL_LINES,
    Entry,
    NodeHomeError,
    NodeInfo,
    RunCollector,
    RunFiles,
    RunSender,
    clear_node_home,
    node_guild_home,
)

RUN = "0123456789abcdef" * 2
TRIAL = "trial_1"
NODE = NodeInfo("10.0.0.6", "b", "node-b")
MB = 2**20


class Rig:
    """A node's Guild home with one run, a driver's user's home holding GUILD_HOME
    (and a `.ssh`, the kind of place an escape would aim at), and the sender
    and collector between them."""

    def __init__(self, tmp: Path, max_copy_bytes: int = 256 * MB, **sender_args):
        self.tmp = tmp
        self.node_home = tmp / "node"
        self.user = tmp / "user"
        (self.user / ".ssh").mkdir(parents=True)
        self.guild_home = self.user / ".guild"
        (self.guild_home / "runs").mkdir(parents=True)
        self.collector = RunCollector(str(self.guild_home), "geronimo")
        self.sent: list[int] = []
        """File bytes of each batch delivered."""
        self.sender = RunSender(
            self.deliver, str(self.node_home), max_copy_bytes, NODE, **sender_args
        )
        self.run = self.node_home / "runs" / RUN
        (self.run / ".guild" / "attrs").mkdir(parents=True)
        (self.run / ".guild" / "attrs" / "id").write_text(RUN)
        self.home_run = self.guild_home / "runs" / RUN

    def deliver(self, trial_id, node, batch):
        batch = pickle.loads(pickle.dumps(batch))  # as a Ray task argument
        self.sent.append(sum(len(e.data) for part in batch for e in part.entries))
        return self.collector.receive(trial_id, node, batch)

    def sync(self, ended: bool = False) -> list[int]:
        """One sync; the bytes of each of its batches."""
        before = len(self.sent)
        self.sender.sync(TRIAL, [RUN], None if ended else RUN, force=True)
        return self.sent[before:]

    def left(self) -> list[str]:
        import yaml

        path = self.home_run / ".guild" / "attrs" / "ray_files_left_on_node"
        return yaml.safe_load(path.read_text()) if path.exists() else []

    def outside(self) -> dict:
        """Everything under the test's temp dir but the two copies of the run."""
        return {
            rel: what
            for rel, what in _tree(self.tmp).items()
            if not rel.startswith(("node/runs/", "user/.guild/runs/"))
        }


def _tree(root: Path) -> dict[str, tuple]:
    """rel -> ("file", bytes) | ("dir",) | ("link", target), links not followed;
    the collector's own files of a run left out."""
    found = {}
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if rel.startswith(".guild/attrs/ray_") or rel == ".guild/LOCK.remote":
                continue
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir",)
            else:
                found[rel] = ("file", path.read_bytes())
    return found


def _make(path: Path, kind: str, content: str = "x") -> None:
    if kind == "file":
        path.write_text(content)
    elif kind == "dir":
        path.mkdir()
        (path / "inner").write_text(content)
    else:
        path.symlink_to("target")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink()


# --- A step's code leaves hostile files ---------------------------------------


def test_the_three_sync_link_escape_writes_nothing_outside_the_run(tmp_path):
    """The attack of issue 16: a link made at home, then replaced on the node
    by a directory holding a link whose target climbs as far as the node
    allows, was made through the stale link two levels higher at home, where
    it pointed at the user's ~/.ssh; a third sync wrote a file through it."""
    rig = Rig(tmp_path)
    outside = rig.outside()
    deep = rig.run / "p1" / "p2" / "p3"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    (deep / "d").symlink_to("../..")  # to p1: inside the run
    rig.sync()
    (deep / "d").unlink()
    (deep / "d").mkdir()
    # Inside the run on the node (its .ssh); from home's p1, the user's ~/.ssh.
    (deep / "d" / "e").symlink_to("../../../../.ssh")
    rig.sync()
    (rig.run / "p1" / "e").mkdir()
    (rig.run / "p1" / "e" / "authorized_keys").write_text("ssh-ed25519 attacker\n")
    rig.sync(ended=True)

    assert not (rig.user / ".ssh" / "authorized_keys").exists()
    assert rig.outside() == outside
    assert _tree(rig.home_run) == _tree(rig.run)
    link = rig.home_run / "p1" / "p2" / "p3" / "d" / "e"
    assert os.path.realpath(link).startswith(str(rig.home_run) + os.sep)
    assert rig.collector.refused == []


def test_the_escape_as_the_old_sender_sent_it_stays_in_the_run(tmp_path):
    """The collector on its own: fed what the sender before issue 16 sent for
    the attack above (no directory entry; the link's removal after the link
    in it), it still writes only inside the run."""
    rig = Rig(tmp_path)
    outside = rig.outside()
    receive = rig.collector.receive
    f = Entry("p1/p2/p3/f", FILE, data=b"x", size=1)
    receive(TRIAL, NODE, [_changes(f, Entry("p1/p2/p3/d", LINK, "../.."))])
    assert os.readlink(rig.home_run / "p1/p2/p3/d") == "../.."
    e = Entry("p1/p2/p3/d/e", LINK, "../../../../.ssh")
    # Without the removal, d is still a link here: refused.
    receive(TRIAL, NODE, [_changes(e)])
    assert rig.collector.refused == ["p1/p2/p3/d/e: p1/p2/p3/d is not a directory here"]
    receive(TRIAL, NODE, [_changes(e, removed=["p1/p2/p3/d"])])
    keys = Entry("p1/e/authorized_keys", FILE, data=b"ssh-ed25519 attacker", size=20)
    receive(TRIAL, NODE, [_changes(keys)])

    assert not (rig.user / ".ssh" / "authorized_keys").exists()
    assert rig.outside() == outside
    assert (rig.home_run / "p1/e/authorized_keys").is_file()
    assert os.path.realpath(rig.home_run / "p1/p2/p3/d/e") == str(rig.home_run / ".ssh")


def test_a_stale_link_replaced_by_a_directory_is_a_directory_at_home(tmp_path):
    """The new directory's file was written through the stale link, into the
    directory it pointed to; then the link went and the file with it."""
    rig = Rig(tmp_path)
    (rig.run / "sub").mkdir()
    (rig.run / "sub" / "keep").write_text("k")
    (rig.run / "d").symlink_to("sub")
    rig.sync()
    assert (rig.home_run / "d").is_symlink()
    (rig.run / "d").unlink()
    (rig.run / "d").mkdir()
    (rig.run / "d" / "f").write_text("new")
    rig.sync(ended=True)

    assert (rig.home_run / "d" / "f").read_text() == "new"
    assert not (rig.home_run / "d").is_symlink()
    assert not (rig.home_run / "sub" / "f").exists()
    assert _tree(rig.home_run) == _tree(rig.run)


KINDS = ["file", "dir", "link"]


@pytest.mark.parametrize(
    ("before", "after"),
    [(a, b) for a in KINDS for b in KINDS if a != b],
    ids=lambda kind: kind,
)
def test_a_path_that_changes_kind_changes_at_home(tmp_path, before, after):
    """A file that became a directory (or the reverse) made the collector
    raise: the trial failed, blamed on its node."""
    rig = Rig(tmp_path)
    (rig.run / "target").write_text("t")
    _make(rig.run / "x", before, "1")
    rig.sync()
    _remove(rig.run / "x")
    _make(rig.run / "x", after, "2")
    rig.sync(ended=True)

    assert _tree(rig.home_run) == _tree(rig.run)
    assert rig.collector.refused == []


def test_a_fifo_or_socket_is_listed_never_opened(tmp_path, monkeypatch):
    """Opening a FIFO for reading waits for a writer: the sender hung, and the
    trial with it, forever."""
    rig = Rig(tmp_path)
    os.mkfifo(rig.run / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        monkeypatch.chdir(rig.run)  # a socket's path has at most 107 bytes
        sock.bind("sock")
        (rig.run / "model.json").write_text("{}")
        synced = threading.Thread(target=rig.sync, kwargs={"ended": True})
        synced.start()
        synced.join(timeout=60)
        if synced.is_alive():  # free the sender: a writer opens the FIFO
            os.close(os.open(rig.run / "pipe", os.O_WRONLY | os.O_NONBLOCK))
            synced.join()

    assert not synced.is_alive() and synced.native_id is not None
    assert (rig.home_run / "model.json").read_text() == "{}"
    assert not (rig.home_run / "pipe").exists()
    assert rig.left() == ["pipe (a FIFO: not sent)", "sock (a socket: not sent)"]


# --- Size: growth, batches, a 500 MB output ----------------------------------


def test_a_file_that_grows_is_sent_as_its_new_bytes(tmp_path):
    rig = Rig(tmp_path)
    log = rig.run / "log.txt"
    log.write_bytes(b"a" * 3 * MB)
    assert sum(rig.sync()) == 3 * MB + len(RUN)
    with open(log, "ab") as f:
        f.write(b"0123456789")
    assert rig.sync() == [10]
    # Rewritten where it was sent (a JSON list that got one more item, say):
    # the whole file again.
    with open(log, "r+b") as f:
        f.seek(3 * MB)
        f.write(b"X123456789 and more")
    assert rig.sync() == [3 * MB + 19]
    rig.sync(ended=True)
    assert (rig.home_run / "log.txt").read_bytes() == log.read_bytes()


def test_a_sync_is_sent_in_batches_of_at_most_the_cap(tmp_path):
    rig = Rig(tmp_path, batch_bytes=64 * 1024)
    (rig.run / "big.bin").write_bytes(os.urandom(MB))
    (rig.run / "mid.bin").write_bytes(os.urandom(300 * 1024))
    (rig.run / "empty").write_bytes(b"")
    locked_until_last = []
    deliver = rig.deliver

    def deliver_and_check_the_lock(trial_id, node, batch):
        locked_until_last.append((rig.home_run / ".guild" / "LOCK.remote").exists())
        return deliver(trial_id, node, batch)

    rig.sender.deliver = deliver_and_check_the_lock
    sizes = rig.sync(ended=True)

    assert len(sizes) > 20 and max(sizes) <= 64 * 1024
    assert _tree(rig.home_run) == _tree(rig.run)
    # Running (locked) until its last batch, which ends it.
    assert locked_until_last[1:] == [True] * (len(sizes) - 1)
    assert not (rig.home_run / ".guild" / "LOCK.remote").exists()


def _write_output(run: Path, lines: list[bytes]) -> None:
    """Appends `lines` to the run's output as Guild does, with its index."""
    with open(run / ".guild" / "output", "ab") as out:
        out.write(b"".join(lines))
    with open(run / ".guild" / "output.index", "ab") as index:
        index.write(
            b"".join(struct.pack("!QB", 1000 + i, 0) for i in range(len(lines)))
        )


def test_a_500_mb_output_comes_home_as_its_tail_in_bounded_memory(tmp_path):
    """The output, a Guild file, always came home whole: every sync period
    while the step ran, all of it, in one message held by the collector."""
    rig = Rig(tmp_path)
    run = rig.run
    _write_output(run, [b"starting\n"])
    rig.sync()
    # 500 MB: sparse, then 2 MB of real lines at its end (quick to make).
    with open(run / ".guild" / "output", "ab") as out:
        out.truncate(498 * MB)
    _write_output(run, [b"epoch %07d loss 0.5\n" % i for i in range(2 * MB // 26)])
    output = run / ".guild" / "output"
    assert output.stat().st_size > 499 * MB

    tracemalloc.start()
    try:
        second = rig.sync()
        _write_output(run, [b"one more line\n"])
        third = rig.sync()
        _write_output(run, [b"the end\n"])
        last = rig.sync(ended=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    tail_bound = OUTPUT_TAIL_BYTES + 9 * (OUTPUT_TAIL_LINES + 1) + 4096
    for sizes in (second, third, last):
        assert sum(sizes) <= tail_bound
    # A few copies of the tail (read, sent, received), not of the output.
    assert peak < 16 * MB, "the output is never read whole"
    home = (rig.home_run / ".guild" / "output").read_bytes()
    assert home.endswith(b"one more line\nthe end\n")
    first_line, rest = home.split(b"\n", 1)
    left_out = output.stat().st_size - len(rest)
    assert first_line.decode().startswith(f"[gpkg.ray: the first {left_out} bytes (")
    assert len(rest) <= OUTPUT_TAIL_BYTES and rest.count(b"\n") <= OUTPUT_TAIL_LINES
    # Guild's index: an entry per line, the note's first.
    index = (rig.home_run / ".guild" / "output.index").read_bytes()
    assert len(index) == 9 * home.count(b"\n")
    assert f".guild/output (500 MB; its last {len(rest)} bytes came home)" in rig.left()
    rig.sender.remove_runs([RUN])
    assert run.exists(), "the whole output stays on the node"


@pytest.mark.parametrize(
    ("tail", "whole", "lines", "kept"),
    [
        (b"t of a line\nb\nc\n", False, 5, b"b\nc\n"),
        (b"a\nb\nc\n", True, 5, b"a\nb\nc\n"),
        (b"only one cut line\n", False, 5, b"only one cut line\n"),
        (b"a\nb\nc\n", True, 2, b"b\nc\n"),
        (b"a\nb\nc\nd", True, 2, b"c\nd"),  # the last line unfinished
    ],
)
def test_an_outputs_tail_is_whole_lines(monkeypatch, tail, whole, lines, kept):
    monkeypatch.setattr(run_sync, "OUTPUT_TAIL_LINES", lines)
    assert tail[run_sync._first_line_kept(tail, whole) :] == kept


# --- A node's process sends what it likes -------------------------------------


def _changes(*entries, removed=(), run_id=RUN, ended=False) -> RunFiles:
    return RunFiles(run_id, "/node/run", ended, list(removed), list(entries))


def test_hostile_paths_and_links_are_refused_and_listed(tmp_path):
    rig = Rig(tmp_path)
    outside = rig.outside()
    receive = rig.collector.receive
    made = [Entry("p1", DIR), Entry("q", DIR), Entry("p1/d", LINK, "../q")]
    receive(TRIAL, NODE, [_changes(*made)])
    assert (rig.home_run / "p1" / "d").is_symlink()
    hostile = [
        Entry("../escape", FILE, data=b"x", size=1),
        Entry("/abs", FILE, data=b"x", size=1),
        Entry("a/./b", FILE, data=b"x", size=1),
        # Through the link made above: a sender that never says d is a dir now.
        Entry("p1/d/e", FILE, data=b"x", size=1),
        Entry("p1/d/f", LINK, "x"),
        Entry(".guild/LOCK.remote", FILE, data=b"x", size=1),
        Entry(".guild/attrs/ray_node", FILE, data=b"x", size=1),
        Entry(".guild", LINK, "p1"),
        Entry("x.gpkg-ray-tmp", FILE, data=b"x", size=1),
        Entry("l1", LINK, "/home/user/.ssh"),
        Entry("l2", LINK, "../.ssh"),
        Entry("p1/l3", LINK, "../../.ssh"),
        Entry("p1/l4", LINK, "./../x"),
        # Lexically inside, but through the link p1/d (to the run itself).
        Entry("p1/l5", LINK, "d/../../x"),
        Entry("big", FILE, data=b"x", size=0),
        "not an entry",
    ]
    receive(TRIAL, NODE, [_changes(*hostile, removed=[".guild", "../x"])])

    assert rig.outside() == outside
    assert not (rig.user / "escape").exists()
    for name in ("l1", "l2", "p1/l3", "p1/l4", "p1/l5", "x.gpkg-ray-tmp", "big"):
        assert not os.path.lexists(rig.home_run / name), name
    assert (rig.home_run / ".guild" / "LOCK.remote").read_text() == "geronimo"
    assert (rig.home_run / ".guild").is_dir() and not (
        rig.home_run / ".guild"
    ).is_symlink()
    left = rig.left()
    assert "../escape (refused: not a plain path in the run)" in left
    assert "p1/d/e (refused: p1/d is not a directory here)" in left
    assert "l1 (a link to /home/user/.ssh, out of the run: not made)" in left
    assert "p1/l5 (a link to d/../../x, out of the run: not made)" in left
    # All but the 5 links out of the run, which are listed, not refused.
    assert len(rig.collector.refused) == len(hostile) + 2 - 5


@pytest.mark.parametrize(
    ("run_id", "why"),
    [
        ("../../etc", "is not a run id of gpkg.ray"),
        ("F" * 32, "is not a run id of gpkg.ray"),
        ("e" * 32, "is in GUILD_HOME already, not a run of this tune"),
    ],
)
def test_runs_that_are_not_this_tunes_are_refused(tmp_path, run_id, why):
    rig = Rig(tmp_path)
    other = rig.guild_home / "runs" / ("e" * 32)
    other.mkdir(parents=True)
    (other / "model.json").write_text("mine")
    outside = rig.outside()

    rig.collector.receive(
        TRIAL,
        NODE,
        [_changes(Entry("model.json", FILE, data=b"x", size=1), run_id=run_id)],
    )

    assert rig.outside() == outside
    assert (other / "model.json").read_text() == "mine"
    assert len(rig.collector.refused) == 1 and why in rig.collector.refused[0]


def test_a_run_is_its_trials_and_ended_runs_stay_as_they_ended(tmp_path):
    rig = Rig(tmp_path)
    receive = rig.collector.receive
    receive(TRIAL, NODE, [_changes(Entry("a", FILE, data=b"1", size=1))])
    receive("trial_2", NODE, [_changes(Entry("a", FILE, data=b"2", size=1))])
    receive(TRIAL, NODE, [_changes(ended=True)])
    receive(TRIAL, NODE, [_changes(Entry("a", FILE, data=b"3", size=1))])

    assert (rig.home_run / "a").read_text() == "1"
    assert not (rig.home_run / ".guild" / "LOCK.remote").exists()
    assert rig.collector.refused == [f"trial trial_2: run {RUN} is another trial's"]


def test_bytes_that_do_not_follow_the_copy_here_are_asked_for_whole(tmp_path):
    rig = Rig(tmp_path)
    receive = rig.collector.receive
    receive(TRIAL, NODE, [_changes(Entry("log", FILE, data=b"abc", size=3))])
    (rig.home_run / "log").write_text("changed here")

    resend = receive(
        TRIAL, NODE, [_changes(Entry("log", FILE, offset=3, data=b"d", size=4))]
    )

    assert resend == [(RUN, "log")]
    assert (rig.home_run / "log").read_text() == "changed here"


# --- The node's Guild home ----------------------------------------------------


@pytest.fixture
def node_tmp(tmp_path, monkeypatch):
    """The node's temp dir, where the tune's Guild home goes."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_the_nodes_guild_home_is_private(node_tmp):
    home = Path(node_guild_home("tune1"))

    assert home == node_tmp / "gpkg-ray-runs-tune1"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    home.chmod(0o755)  # as an earlier gpkg.ray made it
    node_guild_home("tune1")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


@pytest.mark.parametrize("made", ["link", "others_writable", "other_user"])
def test_a_guild_home_someone_else_could_have_made_is_refused(node_tmp, made):
    home = node_tmp / "gpkg-ray-runs-tune1"
    if made == "link":
        (node_tmp / "elsewhere").mkdir()
        home.symlink_to(node_tmp / "elsewhere")
    else:
        home.mkdir()
        home.chmod(0o777 if made == "others_writable" else 0o700)
        if made == "other_user":
            if os.getuid() != 0:
                pytest.skip("giving a directory to another user needs root")
            os.chown(home, 4242, 4242)

    with pytest.raises(NodeHomeError) as e:
        node_guild_home("tune1")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(
        f"the tune's Guild home on node {socket.gethostname()}, {home}, "
    )
    assert message.endswith(": remove it there, then run the tune again")


def test_a_restarted_tune_clears_what_an_earlier_attempt_left(node_tmp):
    home = Path(node_guild_home("tune1"))
    runs = home / "runs"
    for run_id in ("a" * 32, "b" * 32):
        (runs / run_id / ".guild").mkdir(parents=True)
    run_sync._record_kept(str(home), "b" * 32)  # a file of it over max-copy-mb

    clear_node_home("tune1")

    assert sorted(p.name for p in runs.iterdir()) == ["b" * 32]


def test_a_big_file_keeps_its_run_on_the_node_across_restarts(node_tmp):
    home = Path(node_guild_home("tune1"))
    rig_run = home / "runs" / RUN
    (rig_run / ".guild").mkdir(parents=True)
    (rig_run / "model.bin").write_bytes(b"x" * 100)
    collector = RunCollector(str(node_tmp / "driver"), "geronimo")
    sender = RunSender(lambda t, n, b: collector.receive(t, n, b), str(home), 10, NODE)
    sender.sync(TRIAL, [RUN], None)
    sender.remove_runs([RUN])

    clear_node_home("tune1")

    assert (rig_run / "model.bin").exists()
