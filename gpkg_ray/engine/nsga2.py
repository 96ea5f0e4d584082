"""Optuna's NSGA-II sampler as Ray Tune can keep it: Tune pickles its
searcher (the Tuner's state, and the searcher's own checkpoints), and
Optuna's genetic samplers hold a thread lock, which does not pickle."""

from __future__ import annotations

import threading
from typing import Any

from optuna.samplers import NSGAIISampler


class PicklableNSGAIISampler(NSGAIISampler):
    """NSGAIISampler whose lock is left out of its pickled state and made
    anew when it is read back."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
