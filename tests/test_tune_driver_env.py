"""The environment the tune's driver runs Ray Tune's `fit` in."""

from __future__ import annotations

import inspect
import math
import os

from ray.tune.execution import tune_controller
from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

from gpkg_ray.engine.ray_tune import _TUNE_DRIVER_ENV, EXPERIMENT_STATE_PERIOD_ENV
from gpkg_ray.environ import patched_environ

HOUR = 3600.0


def _manager_as_tune_makes_it(tmp_path) -> _ExperimentCheckpointManager:
    """The experiment state's saver, with the period Tune's controller reads
    from the environment (as TuneController.__init__ does)."""
    period = os.getenv(EXPERIMENT_STATE_PERIOD_ENV, "auto")
    return _ExperimentCheckpointManager(
        storage=_LocalStorage(str(tmp_path)), checkpoint_period=period
    )


class _LocalStorage:
    """Where the saver writes, and a sync that has nothing to send (Ray's own
    StorageContext needs a Ray session for its staging dir)."""

    def __init__(self, path: str):
        self.experiment_driver_staging_path = path
        self.experiment_fs_path = path
        self.syncer = self

    def sync_up(self, local: str, remote: str) -> bool:
        return True

    def wait(self) -> None:
        pass


def test_tune_reads_its_experiment_state_period_where_the_driver_sets_it():
    source = inspect.getsource(tune_controller.TuneController.__init__)
    assert f'os.getenv("{EXPERIMENT_STATE_PERIOD_ENV}", "auto")' in source


def test_the_experiment_state_is_written_once_at_the_start_and_at_the_end(tmp_path):
    """Tune's experiment state holds every trial and is written whole: not
    again and again as trials run (it would be 14 MB every 10 s at 1,000
    trials); the tune restarts from its own journal."""
    with patched_environ(_TUNE_DRIVER_ENV):
        manager = _manager_as_tune_makes_it(tmp_path)
    saves = []
    manager.sync_up_experiment_state(lambda: saves.append("start"))
    manager._last_save_time -= HOUR  # as if the search had run an hour since
    manager.sync_up_experiment_state(lambda: saves.append("running"))
    manager.sync_up_experiment_state(lambda: saves.append("end"), force=True)

    assert saves == ["start", "end"]
    assert math.isinf(manager._checkpoint_period)
