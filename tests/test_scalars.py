"""Reading a run's scalars while they are written, as Guild records them.

Event files store float32: the values here are exact in float32, but where a
test says otherwise.
"""

from __future__ import annotations

from guild.summary import SummaryWriter

from gpkg_ray import guild_api
from gpkg_ray.trial.scalars import Scalar, ScalarWatcher, as_logged, scalar_series


def _write(path, tag, value, step):
    with SummaryWriter(str(path)) as writer:
        writer.add_scalar(tag, value, step)


def test_poll_returns_only_new_values(tmp_path):
    run_dir = tmp_path / "run"
    watcher = ScalarWatcher(str(run_dir))
    assert watcher.poll() == []  # the run has not started yet

    guild_dir = run_dir / ".guild"
    guild_dir.mkdir(parents=True)
    writer = SummaryWriter(str(guild_dir))
    writer.add_scalar("loss", 0.875, 0)
    writer.flush()
    assert watcher.poll() == [("loss", Scalar(0.875, 0))]
    assert watcher.poll() == []

    writer.add_scalar("loss", 0.5, 1)
    writer.add_scalar("acc", 0.75, 1)
    writer.flush()
    writer.add_scalar("loss", 0.25, 2)
    writer.flush()
    assert watcher.poll() == [
        ("loss", Scalar(0.5, 1)),
        ("acc", Scalar(0.75, 1)),
        ("loss", Scalar(0.25, 2)),
    ]
    writer.close()
    assert watcher.latest == {"loss": Scalar(0.25, 2), "acc": Scalar(0.75, 1)}


def test_event_files_a_script_writes_are_found_on_rescan(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".guild").mkdir(parents=True)
    watcher = ScalarWatcher(str(run_dir), rescan_seconds=3600)
    watcher.poll(final=True)  # scanned once: nothing yet

    _write(run_dir / "logs" / "val", "acc_val", 0.625, 3)
    assert watcher.poll() == []  # not rescanned yet
    assert watcher.poll(final=True) == [("acc_val", Scalar(0.625, 3))]


def test_output_scalars_win_over_a_scripts_own_tag(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir / "logs", "acc", 0.125, 0)
    _write(run_dir / ".guild", "acc", 0.25, 0)
    watcher = ScalarWatcher(str(run_dir))
    watcher.poll(final=True)
    assert watcher.latest == {"acc": Scalar(0.25, 0)}


def test_links_to_other_runs_are_not_read(tmp_path):
    other = tmp_path / "other"
    _write(other / "logs", "acc", 0.5, 0)
    run_dir = tmp_path / "run"
    (run_dir / ".guild").mkdir(parents=True)
    (run_dir / "upstream").symlink_to(other)
    assert ScalarWatcher(str(run_dir)).poll(final=True) == []


def test_values_are_read_as_the_step_logged_them(tmp_path):
    """Guild stores `acc: 0.963889` in 32 bits, 0.9638890027999878: it is read
    back as 0.963889, here and in all that gpkg.ray writes from it (the
    objective, trials.csv, the records). A value stored in 64 bits is kept."""
    run_dir = tmp_path / "run"
    _write(run_dir / ".guild", "acc", 0.963889, 0)
    _write(run_dir / ".guild", "acc", 1e-7, 1)
    guild_api.write_scalars(str(run_dir / "logs"), {"exact": 0.1 + 0.2}, 0)

    assert [s.value for s in scalar_series(str(run_dir), "acc")] == [0.963889, 1e-7]
    assert ScalarWatcher(str(run_dir)).latest_final()["exact"].value == 0.1 + 0.2


def test_as_logged_is_the_shortest_decimal_of_the_same_float32():
    float32 = 0.9638890027999878
    assert as_logged(float32) == 0.963889
    assert as_logged(0.8503239750862122) == 0.850324
    assert as_logged(0.5) == 0.5 and as_logged(-3.0) == -3.0
    assert as_logged(123456.0) == 123456.0
    assert as_logged(float("inf")) == float("inf")
