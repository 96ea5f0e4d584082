"""This process's environment: temporary changes to it, undone on exit, and
what gpkg.ray leaves in the machine's (names that a later process must find)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

RAY_TEMP_PREFIX = "gpkg-ray-"
"""Prefix of an embedded Ray's temp dir (short: Ray puts sockets there). Here,
not in the engine, since a restart finds and removes the dir of a killed
attempt (resume.leftovers) without importing the engine."""

STEP_TUNE_VAR = "GPKG_RAY_TUNE_RUN"
"""In the environment of every process a tune starts for its steps (step
launchers, `guild run`s, their ops): the tune run's id. A restart finds what a
killed attempt left running by it (resume.leftovers): a step forked by a
launcher shows the launcher's command line, not its run id, and a fork keeps
the environment its launcher started with."""


@contextmanager
def patched_environ(
    set_vars: dict[str, str], unset: Iterable[str] = ()
) -> Iterator[None]:
    """Sets `set_vars` and removes `unset` in os.environ; restores both on exit."""
    unset = tuple(unset)
    saved = {name: os.environ.get(name) for name in (*set_vars, *unset)}
    for name in unset:
        os.environ.pop(name, None)
    os.environ.update(set_vars)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
