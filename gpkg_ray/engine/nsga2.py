"""Optuna's NSGA-II sampler, made to pickle: Ray saves the searcher's state
with pickle (OptunaSearch.save), and Optuna 5's GA samplers hold a thread
lock. A module of its own, so the class is found by name when Ray loads the
state, and optuna is imported only where NSGA-II is used."""

from __future__ import annotations

import threading

from optuna.samplers import NSGAIISampler


class PicklableNSGAIISampler(NSGAIISampler):
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
