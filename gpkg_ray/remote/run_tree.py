"""Writes into one run's directory on the driver without ever following a link.

What a node sends is not trusted (see `run_sync`): a path it names could lead
through a link on the driver (one it sent earlier, now stale) to anywhere the
driver's user can write. So every operation here starts from an open
descriptor of the run's directory and opens each directory of the path with
O_NOFOLLOW: a link or a file where a directory should be stops the operation
(`Refused`). Every file, directory and link made is thus inside the run's real
path, whatever the run's tree holds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator

TMP_SUFFIX = ".gpkg-ray-tmp"
"""A file being received whole: renamed to its name once complete, so that a
reader never sees half a new copy. Node paths may not end with it."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """A path this tree will not write: it says why, in a few words."""


class RunTree:
    """The directory of one run on the driver, held open."""

    def __init__(self, fd: int, real_path: str):
        self.fd = fd
        self.real_path = real_path

    @classmethod
    def open(cls, runs_dir: str, run_id: str, create: bool) -> RunTree:
        """Opens `runs_dir/run_id`, made here if `create`; raises
        FileExistsError when `create` finds it there already, and Refused when
        it is not a real directory."""
        os.makedirs(runs_dir, exist_ok=True)
        runs_fd = os.open(runs_dir, _DIR_FLAGS & ~os.O_NOFOLLOW)
        try:
            if create:
                os.mkdir(run_id, dir_fd=runs_fd)
            try:
                fd = os.open(run_id, _DIR_FLAGS, dir_fd=runs_fd)
            except (NotADirectoryError, OSError) as e:
                raise Refused(f"run directory {run_id} is not a directory") from e
        finally:
            os.close(runs_fd)
        return cls(fd, os.path.join(os.path.realpath(runs_dir), run_id))

    def close(self) -> None:
        os.close(self.fd)

    def kind(self, parts: list[str]) -> str | None:
        """ "file", "dir", "link", "other", or None when nothing is there (or
        a directory on the way is not one)."""
        try:
            with self._parent(parts[:-1], create=False) as parent:
                if parent is None:
                    return None
                return _kind_at(parent, parts[-1])
        except Refused:
            return None

    def make_dir(self, parts: list[str]) -> None:
        with self._parent(parts[:-1], create=True) as parent:
            name = parts[-1]
            if _kind_at(parent, name) != "dir":
                _clear(parent, name)
                os.mkdir(name, dir_fd=parent)

    def make_link(self, parts: list[str], target: str) -> bool:
        """A link to `target` if it points inside the run (`link_inside`);
        else removes what is there and returns False."""
        with self._parent(parts[:-1], create=True) as parent:
            _clear(parent, parts[-1])
            if not self.link_inside(parts, target):
                return False
            os.symlink(target, parts[-1], dir_fd=parent)
            return True

    def remove(self, parts: list[str]) -> None:
        """Removes what is at `parts` (a directory with all it holds), and a
        file being received there; nothing when a directory on the way is
        missing, a link or a file."""
        try:
            with self._parent(parts[:-1], create=False) as parent:
                if parent is not None:
                    _clear(parent, parts[-1])
                    _clear(parent, parts[-1] + TMP_SUFFIX)
        except Refused:
            pass

    def write(
        self,
        parts: list[str],
        data: bytes,
        offset: int,
        size: int,
        mtime: float,
        into_tmp: bool,
    ) -> bool:
        """Writes `data` at `offset` of the file at `parts`: into its temporary
        copy if `into_tmp` (offset 0 starts it), renamed over the file once
        `size` bytes are there; else appended to the file itself. Returns False,
        writing nothing, when the file there does not have `offset` bytes."""
        with self._parent(parts[:-1], create=True) as parent:
            name = parts[-1]
            dest = name + TMP_SUFFIX if into_tmp else name
            if into_tmp and offset == 0:
                # A new copy: what is there of another kind goes first.
                if _kind_at(parent, name) not in (None, "file"):
                    _clear(parent, name)
                _clear(parent, dest)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            elif _kind_at(parent, dest) == "file":
                flags = os.O_WRONLY
            else:
                return False
            fd = os.open(
                dest, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=parent
            )
            try:
                if os.fstat(fd).st_size != offset:
                    return False
                os.pwrite(fd, data, offset)
                complete = offset + len(data) >= size
                if complete or not into_tmp:
                    os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
            if into_tmp and complete:
                if _kind_at(parent, name) == "dir":
                    _clear(parent, name)
                # A link or file there is replaced, never followed.
                os.replace(
                    name + TMP_SUFFIX, name, src_dir_fd=parent, dst_dir_fd=parent
                )
            return True

    def read(self, parts: list[str], limit: int) -> bytes | None:
        """The bytes of the regular file at `parts`, or None when it is not
        one (or not reached without following a link) or over `limit`."""
        try:
            with self._parent(parts[:-1], create=False) as parent:
                if parent is None or _kind_at(parent, parts[-1]) != "file":
                    return None
                fd = os.open(
                    parts[-1],
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                    dir_fd=parent,
                )
        except (Refused, OSError):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                return None
            return os.pread(fd, st.st_size, 0)
        finally:
            os.close(fd)

    def link_inside(self, parts: list[str], target: str) -> bool:
        """Whether a link at `parts` to `target` points inside the run (not
        to the run's directory itself), now and whatever the run's tree
        becomes: the target is relative, climbs (`..`) at most to the run's
        directory first, then only descends, and resolves inside the run's
        real path."""
        if not target or "\0" in target or target.startswith("/"):
            return False
        steps = target.rstrip("/").split("/")
        ups = 0
        while ups < len(steps) and steps[ups] == "..":
            ups += 1
        names = steps[ups:]
        depth = len(parts) - 1
        # Climbs at most to the run's directory, and to a directory in it.
        if ups > depth or (ups == depth and not names):
            return False
        if any(name in ("", ".", "..") for name in names):
            return False
        # Each link made here passed this check, so links it leads through
        # point inside too: a resolution that climbs only over the link's own
        # (real) directories, then descends, cannot leave the run.
        where = os.path.join(self.real_path, *parts[:-1], target)
        return os.path.realpath(where).startswith(self.real_path + os.sep)

    @contextlib.contextmanager
    def _parent(self, parts: list[str], create: bool) -> Iterator[int | None]:
        """The directory `parts` of the run, opened component by component
        without following a link (made if missing and `create`); None when
        missing and not `create`. Refused when one is a link or a file."""
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        yield None
                        return
                    os.mkdir(part, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:  # ELOOP (a link), ENOTDIR (a file)
                    where = "/".join(parts[: i + 1])
                    raise Refused(f"{where} is not a directory here") from e
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)


def _kind_at(dir_fd: int, name: str) -> str | None:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def _clear(dir_fd: int, name: str) -> None:
    """Removes `name` in `dir_fd`, whatever it is; a link itself, not what it
    points to (rmtree with dir_fd does not follow links either)."""
    kind = _kind_at(dir_fd, name)
    if kind == "dir":
        shutil.rmtree(name, dir_fd=dir_fd)
    elif kind is not None:
        os.unlink(name, dir_fd=dir_fd)
