"""Files that are whole or absent, as a kill or a reader finds them.

A results file rewritten in place (`open(path, "w")`) is empty, then partial,
until its last write: a tune killed meanwhile, or a restart that writes it
again while someone reads it, leaves or shows a cut file. `replaced` writes a
file next to it and puts it in the file's place at once (`os.replace` is atomic
within a filesystem), after it is on disk; the directory entry is then synced
too (`fsync_dir`), as is the journal's on creation.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from typing import IO, Any

from gpkg_ray import faults


@contextlib.contextmanager
def replaced(path: str, mode: str = "w", **open_args: Any) -> Iterator[IO]:
    """A new file open for writing (`mode`, `open_args` as for `open`) that
    takes the place of `path` once the block ends without an error; on an
    error, `path` stays as it was and the new file is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    # A hidden name next to the file: one a kill leaves stands out less, and
    # the same filesystem makes the replace atomic.
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}{_ASIDE}"
    )
    # As open() would make it (0666 less the umask): mkstemp's are 0600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        faults.point("results-write")  # written aside, not yet in place
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


_ASIDE = ".tmp"
_WRITTEN_ASIDE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
"""The name `replaced` gives a file it writes aside."""


def remove_written_aside(directory: str) -> list[str]:
    """Removes the files `replaced` wrote aside in `directory` and never put
    in place (a kill came first); returns their names. Only where nothing
    writes now: a restart, before it writes its results again."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if _WRITTEN_ASIDE.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, name))
                    removed.append(name)
    return removed


def fsync_dir(directory: str) -> None:
    """Syncs `directory`'s entries to disk: a file just created or replaced
    there is only durable once its directory is."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
