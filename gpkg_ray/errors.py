"""Errors a user sees as a single line, with what to do about them."""


class GpkgRayError(Exception):
    """Base class of the errors gpkg.ray reports to users without a traceback."""


class SpecError(GpkgRayError):
    """The tune configuration or its flags are invalid; nothing has run yet."""


class ClusterError(GpkgRayError):
    """The Ray cluster named by `cluster` cannot be used."""


class TrialFailed(Exception):
    """A trial step failed; the message names the step and its Guild run."""


LOST_WORKER = "its Ray worker was lost"
"""How the error of a trial whose Ray worker died begins (engine/events.py)."""
