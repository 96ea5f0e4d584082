"""Errors a user sees as a single line, with what to do about them."""

import errno
import os


class GpkgRayError(Exception):
    """Base class of the errors gpkg.ray reports to users without a traceback."""


class SpecError(GpkgRayError):
    """The tune configuration or its flags are invalid; nothing has run yet."""


class ClusterError(GpkgRayError):
    """The Ray cluster named by `cluster` cannot be used."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = tuple(os.strerror(n) for n in DISK_FULL_ERRNOS)
"""How a step's error line says the disk is full (`No space left on device`)."""


class DiskFull(GpkgRayError):
    """The disk filled during the tune: it stops, its journal whole (the
    journal never keeps part of a line), and a restart goes on from there."""

    def __init__(self, what: str, run_id: str | None = None):
        run_id = run_id or os.getenv("RUN_ID", "RUN")
        super().__init__(
            f"the disk is full ({what}): free space, then "
            f"`guild run --restart {run_id}` finishes the search"
        )


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


class TrialFailed(Exception):
    """A trial step failed; the message names the step and its Guild run."""


LOST_WORKER = "its Ray worker was lost"
"""How the error of a trial whose Ray worker died begins (engine/events.py)."""
