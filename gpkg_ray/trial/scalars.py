"""Scalars of a Guild run, read while the run writes them.

Guild records a run's output scalars in `RUN_DIR/.guild/events.out.tfevents.*`, and
scripts may write TF event files of their own anywhere in the run directory. This
reads both the way Guild does (TensorBoard's event loader, Guild's value decoding),
but incrementally: each poll returns only what was written since the last one.
Only the run's own files: not what Guild put in from its dependencies (a
required run's files, copied or linked, see RunFiles).

Guild stores output scalars as 32-bit floats: a step that printed
`acc: 0.963889` is read back as 0.9638890027999878. Values stored that way are
given back as the step logged them (`as_logged`).
"""

from __future__ import annotations

import math
import os
import struct
import time
from dataclasses import dataclass

from gpkg_ray import guild_api


@dataclass(frozen=True)
class Scalar:
    value: float
    step: int


class RunFiles:
    """Tells a run's own event files from those Guild put in its directory
    from its dependencies: Guild copies (or, with `target-type: link`, links)
    a required run's top-level entries into the run that requires it, so the
    event files `train` writes at its root show up in `evaluate`'s run, and
    would pass for `evaluate`'s scalars."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._dependencies: frozenset[str] | None = None

    def ready(self) -> bool:
        """Whether the run's dependencies are all in place, and so known: not
        before the op starts (Guild resolves them first)."""
        if self._dependencies is None:
            if not guild_api.dependencies_settled(self.run_dir):
                return False
            self._dependencies = guild_api.dependency_paths(self.run_dir)
        return True

    def is_own_event_file(self, path: str) -> bool:
        """An event file the run wrote itself, not a dependency's (call once
        `ready`)."""
        if ".tfevents." not in os.path.basename(path) or os.path.islink(path):
            return False
        dependencies = self._dependencies or frozenset()
        relpath = os.path.normpath(os.path.relpath(path, self.run_dir))
        while relpath:  # a file in a dependency's directory is one too
            if relpath in dependencies:
                return False
            relpath = os.path.dirname(relpath)
        return True

    def event_dirs(self):
        """Directories that hold event files of the run's own."""
        for root, dirs, files in os.walk(self.run_dir):
            # Links (e.g. to a required run's files) belong to other runs.
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
            if any(self.is_own_event_file(os.path.join(root, f)) for f in files):
                yield root

    def has_event_file(self, path: str) -> bool:
        try:
            names = os.listdir(path)
        except OSError:
            return False
        return any(self.is_own_event_file(os.path.join(path, n)) for n in names)


class _EventDir:
    """Incremental reader of the run's own event files in one directory."""

    def __init__(self, path: str, files: RunFiles):
        # TensorBoard's directory loader (event_accumulator._GeneratorFromPath),
        # with a filter that leaves out files of other runs.
        from tensorboard.backend.event_processing import (
            directory_watcher,
            event_file_loader,
        )

        self._loader = directory_watcher.DirectoryWatcher(
            path, event_file_loader.LegacyEventFileLoader, files.is_own_event_file
        )

    def new_scalars(self):
        for event in self._loader.Load():
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                # Guild's own decoding (a simple value or a float tensor).
                scalar = guild_api.scalar_of_event(event, value)
                if scalar is None:
                    continue
                tag, number, step = scalar
                if _is_float32(value):
                    number = as_logged(number)
                yield tag, number, step


_DT_FLOAT = 1  # TensorFlow's dtype enum: DT_FLOAT (DT_DOUBLE is 2)


def _is_float32(value) -> bool:
    """A summary value stored in 32 bits: a `simple_value` (Guild's output
    scalars, most writers') or a DT_FLOAT tensor."""
    if value.HasField("tensor"):
        return value.tensor.dtype == _DT_FLOAT
    return value.HasField("simple_value")


def as_logged(value: float) -> float:
    """A 32-bit float's value as it was most likely logged: the shortest decimal
    that is stored as the same 32-bit float (0.9638890027999878 -> 0.963889).

    Any value logged with up to 6 significant digits comes back exactly; one
    logged with more had lost them to the 32 bits already, and this is the
    shortest of the values it could have been. (The step's output text is not
    read again: scripts that write event files of their own have none.)"""
    if not math.isfinite(value):
        return value
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        try:
            if _float32(float(text)) == value:
                return float(text)
        except OverflowError:  # rounded past the largest 32-bit float
            continue
    return value


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


class ScalarWatcher:
    """Latest value of each scalar tag of a run, polled as the run goes.

    `RUN_DIR/.guild` (output scalars) is read on every poll; the rest of the run
    directory is searched for event files every `rescan_seconds`, since a run
    directory can hold many files.
    """

    def __init__(self, run_dir: str, rescan_seconds: float = 2.0):
        self.run_dir = run_dir
        self.files = RunFiles(run_dir)
        self.latest: dict[str, Scalar] = {}
        self._dirs: dict[str, _EventDir] = {}
        self._rescan_seconds = rescan_seconds
        self._last_scan = 0.0

    def poll(self, final: bool = False) -> list[tuple[str, Scalar]]:
        """Reads new events; returns every new (tag, scalar), in the order written."""
        if final or time.monotonic() - self._last_scan >= self._rescan_seconds:
            self._scan()
        else:
            self._add_dir(os.path.join(self.run_dir, ".guild"))
        new: list[tuple[str, Scalar]] = []
        # Output scalars (.guild) last, so they win over a script's own tag.
        for path in sorted(self._dirs, key=lambda p: p.endswith(".guild")):
            for tag, value, step in self._dirs[path].new_scalars():
                self.latest[tag] = Scalar(value, step)
                new.append((tag, self.latest[tag]))
        return new

    def latest_final(self) -> dict[str, Scalar]:
        """Every tag's last value, once the run has ended."""
        self.poll(final=True)
        return self.latest

    def _scan(self) -> None:
        if not self.files.ready():
            return
        self._last_scan = time.monotonic()
        for path in self.files.event_dirs():
            self._add_dir(path)

    def _add_dir(self, path: str) -> None:
        if not self.files.ready():
            return
        if path not in self._dirs and self.files.has_event_file(path):
            guild_api.patch_tensorboard_logging()
            self._dirs[path] = _EventDir(path, self.files)


def scalar_series(run_dir: str, tag: str) -> list[Scalar]:
    """Every value of `tag` in an ended run, in the order written: its output
    scalars, or else the first event directory that has the tag."""
    guild_api.patch_tensorboard_logging()
    files = RunFiles(run_dir)
    if not files.ready():
        return []
    dirs = sorted(files.event_dirs(), key=lambda p: not p.endswith(".guild"))
    for path in dirs:
        series = [
            Scalar(value, step)
            for name, value, step in _EventDir(path, files).new_scalars()
            if name == tag
        ]
        if series:
            return series
    return []


class PipelineScalarWatcher:
    """Latest value of each scalar tag of a Guild pipeline run (a `steps` op),
    polled as it goes: the scalars of its step runs, which Guild links from the
    pipeline's directory by step name (a pipeline logs none of its own, and
    ScalarWatcher reads no linked run). A tag two steps log is the later
    step's, as the last step's objective is in a tune; each is also given as
    `STEP#TAG`, STEP the name of its link (`--maximize evaluate#acc`)."""

    def __init__(self, run_dir: str, rescan_seconds: float = 2.0):
        self.run_dir = run_dir
        self.latest: dict[str, Scalar] = {}
        self._rescan_seconds = rescan_seconds
        self._steps: dict[str, ScalarWatcher] = {}
        self._names: dict[str, str] = {}
        """Step run dir -> the name of its link."""

    def poll(self, final: bool = False) -> list[tuple[str, Scalar]]:
        self._find_steps()
        new: list[tuple[str, Scalar]] = []
        for target, watcher in self._steps.items():  # in the order they started
            for tag, scalar in watcher.poll(final):
                for name in (tag, f"{self._names[target]}#{tag}"):
                    self.latest[name] = scalar
                    new.append((name, scalar))
        return new

    def latest_final(self) -> dict[str, Scalar]:
        self.poll(final=True)
        return self.latest

    def _find_steps(self) -> None:
        try:
            names = os.listdir(self.run_dir)
        except OSError:
            return
        links = [
            os.path.join(self.run_dir, name)
            for name in names
            if os.path.islink(os.path.join(self.run_dir, name))
        ]
        for link in sorted(links, key=lambda path: os.lstat(path).st_mtime_ns):
            target = os.path.realpath(link)
            if target not in self._steps and guild_api.is_run_dir(target):
                self._steps[target] = ScalarWatcher(target, self._rescan_seconds)
                self._names[target] = os.path.basename(link)


def watcher_for(run_dir: str, pipeline: bool) -> ScalarWatcher | PipelineScalarWatcher:
    """What reads a step run's scalars: a pipeline's are its steps'."""
    return PipelineScalarWatcher(run_dir) if pipeline else ScalarWatcher(run_dir)
