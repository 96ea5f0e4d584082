"""Trial resources: a trial no node can hold is one line before any run; a
search whose trials wait for a busy cluster says what they wait for."""

from __future__ import annotations

import io

import pytest
from projects import write_project
from ray.tune.experiment import Trial

from gpkg_ray.cluster import check_trial_fits
from gpkg_ray.engine.ray_tune import (
    WAIT_NOTICE_SECONDS,
    WAIT_REPEAT_SECONDS,
    ResourceWaits,
)
from gpkg_ray.errors import ClusterError
from gpkg_ray.results.progress import ProgressPrinter
from gpkg_ray.tuning_spec import Objective


def test_a_trial_fits_when_one_node_holds_all_it_needs():
    nodes = [(8.0, 0.0), (2.0, 1.0)]

    check_trial_fits(2, 1, nodes, "cluster 'c'")
    check_trial_fits(8, 0, nodes, "cluster 'c'")
    # 4 CPUs and a GPU in all, but not on one node: Ray would wait forever.
    with pytest.raises(ClusterError) as e:
        check_trial_fits(4, 1, nodes, "cluster 'c'")
    assert str(e.value) == (
        "a trial needs cpus=4 gpus=1 on one node, more than cluster 'c' has (at "
        "most 8 CPUs, 1 GPUs on a node): set the cpus and gpus flags lower, or use "
        "a cluster with bigger nodes"
    )


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _trials(*statuses: str) -> list[Trial]:
    trials = []
    for status in statuses:
        trial = Trial("GuildTrial", stub=True)
        trial.set_status(status)
        trials.append(trial)
    return trials


def _printer_and_waits(clock):
    out = io.StringIO()
    printer = ProgressPrinter(
        4, Objective("evaluate", "acc_val", "max"), [], out=out, started=0, clock=clock
    )
    waits = ResourceWaits(
        printer, cpus=4, gpus=0, clock=clock, free=lambda: {"CPU": 1.0}
    )
    return out, waits


def test_trials_that_wait_with_none_running_are_said_once_in_a_while():
    clock = _Clock()
    out, waits = _printer_and_waits(clock)

    waits.on_step_begin(0, _trials("PENDING", "PENDING"))
    clock.now = WAIT_NOTICE_SECONDS - 1
    waits.on_step_begin(1, _trials("PENDING", "PENDING"))
    assert out.getvalue() == ""  # a moment's wait is no news
    clock.now = WAIT_NOTICE_SECONDS
    waits.on_step_begin(2, _trials("PENDING", "PENDING"))
    clock.now += 1
    waits.on_step_begin(3, _trials("PENDING", "PENDING"))
    assert out.getvalue().splitlines() == [
        "[0:10] waiting 10 s: no trial runs; 2 wait for a node with 4 CPUs, 0 GPUs "
        "free",
        "       (free now: 1 CPUs, 0 GPUs in all)",
    ]
    clock.now = WAIT_NOTICE_SECONDS + WAIT_REPEAT_SECONDS
    waits.on_step_begin(4, _trials("PENDING"))
    assert out.getvalue().count("waiting") == 2


def test_trials_that_wait_for_running_ones_are_no_news():
    clock = _Clock()
    out, waits = _printer_and_waits(clock)

    for step in range(3):
        clock.now = step * WAIT_NOTICE_SECONDS
        waits.on_step_begin(step, _trials("RUNNING", "PENDING", "PENDING"))
    assert out.getvalue() == ""


def test_trials_that_wait_while_there_is_room_are_starting_not_waiting():
    """Room enough in all: the trials' workers are starting (slow on a loaded
    machine), which is no news."""
    clock = _Clock()
    out = io.StringIO()
    printer = ProgressPrinter(
        4, Objective("evaluate", "acc_val", "max"), [], out=out, started=0, clock=clock
    )
    waits = ResourceWaits(printer, cpus=1, gpus=0, clock=clock, free=lambda: {"CPU": 2})

    for step in range(4):
        clock.now = step * WAIT_NOTICE_SECONDS
        waits.on_step_begin(step, _trials("PENDING", "PENDING"))
    assert out.getvalue() == ""
    # Its resources reserved (its placement group's), not yet taken.
    reserved = {"CPU": 0.0, "CPU_group_0_abc": 1.0, "CPU_group_abc": 1.0}
    waits = ResourceWaits(printer, cpus=1, gpus=0, clock=clock, free=lambda: reserved)
    for step in range(4):
        clock.now = step * WAIT_NOTICE_SECONDS
        waits.on_step_begin(step, _trials("PENDING", "PENDING"))
    assert out.getvalue() == ""


@pytest.mark.e2e
def test_gpus_no_node_of_the_embedded_ray_has_stop_the_tune_before_any_trial(project):
    """The embedded Ray's GPUs are known once it is up (Ray's own count)."""
    write_project(project)

    result = project.tune("gpus=99")

    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "gpkg.ray: a trial needs cpus=1 gpus=99 on one node, more than the "
            "embedded Ray has (at most "
        )
    )
    assert project.runs_of("train") == [] and project.runs_of("trial") == []
