"""The report while the tune runs: the same page as at the end, written again
as trials report, and reloading itself in the browser (a meta refresh that
the page written at the end no longer has).

    guild open TUNE_RUN -p report/index.html     # during a long tune

Writing it never holds up the trials: the engine's events (on the driver's
main thread, Ray's loop) only copy the trial and wake a writer thread. The
writer writes at most once every `report-every` seconds, and waits longer
when a write took long (at least WAIT_FACTOR times its duration), so it takes
a small share of one core whatever the machine. It keeps the process's CPU
priority: a thread niced lower would hold the GIL while the busy cores kept
it off them, and stall Ray's loop on the driver (a priority inversion).
benchmarks/live_report.py measures it (live report on against off).
"""

from __future__ import annotations

import copy
import sys
import threading
import time
from collections.abc import Iterable

from gpkg_ray.listener import SearchStarted, TuneListener
from gpkg_ray.results.report import TuneRun, import_plots, write_report
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import TuneSpec

WAIT_FACTOR = 10
"""A write is followed by a wait of at least this many times its duration:
at most a tenth of one core, at the lowest priority."""


class LiveReport(TuneListener):
    """Writes the report while the search runs; `close()` stops it before the
    report at the end is written."""

    def __init__(
        self,
        run_dir: str,
        spec: TuneSpec,
        guild_home: str,
        tune: TuneRun,
        every: float,
        earlier: Iterable[TrialOutcome] = (),
    ):
        self.run_dir, self.spec, self.guild_home = run_dir, spec, guild_home
        self.tune = tune
        self.every = every
        # Copies, by trial number: a trial run again replaces its earlier
        # attempt, and the engine goes on changing its own outcome objects.
        self._outcomes = {o.number: copy.deepcopy(o) for o in earlier}
        self.writes = 0
        """Pages written so far (for tests and benchmarks)."""
        self._start_state()

    def _start_state(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict:
        """Ray pickles its callbacks, and so every listener, into the tune's
        state (tuner.pkl): a copy without the thread, that writes nothing."""
        state = dict(self.__dict__)
        for name in ("_lock", "_changed", "_closed", "_thread"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start_state()

    def search_started(self, search: SearchStarted) -> None:
        if self.every <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="live-report", daemon=True
        )
        self._thread.start()
        self._changed.set()  # a first page: the search has started

    def trial_started(self, outcome: TrialOutcome) -> None:
        self._note(outcome)

    def trial_updated(self, outcome: TrialOutcome) -> None:
        self._note(outcome)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        self._note(outcome)

    def _note(self, outcome: TrialOutcome) -> None:
        """On the engine's thread: a copy (microseconds), and the writer woken."""
        if self._thread is None:
            return
        snapshot = copy.deepcopy(outcome)
        with self._lock:
            self._outcomes[outcome.number] = snapshot
        self._changed.set()

    def close(self) -> None:
        """Stops the writer, waiting for a write in progress (the page at the
        end must not be replaced by a late live one)."""
        self._closed.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        # matplotlib's import (seconds on busy cores) once, before the first
        # write: counted in that write's time, it would delay the next by ten.
        import_plots()
        while True:
            self._changed.wait()
            if self._closed.is_set():
                return
            self._changed.clear()
            with self._lock:
                outcomes = [self._outcomes[n] for n in sorted(self._outcomes)]
            began = time.monotonic()
            try:
                write_report(
                    self.run_dir,
                    outcomes,
                    self.spec,
                    self.guild_home,
                    self.tune,
                    refresh=max(1, round(self.every)),
                )
            except Exception as e:  # a full disk, matplotlib: the tune goes on
                print(
                    f"gpkg.ray: warning: live report stopped: {e}",
                    file=sys.stderr,
                    flush=True,
                )
                return
            self.writes += 1
            took = time.monotonic() - began
            if self._closed.wait(max(self.every, WAIT_FACTOR * took)):
                return
