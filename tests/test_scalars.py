"""Reading a run's scalars while they are written, as Guild records them.

Event files store float32: the values here are exact in float32, but where a
test says otherwise.
"""

from __future__ import annotations

import os
import shutil

import pytest
from guild.summary import SummaryWriter

from gpkg_ray import guild_api
from gpkg_ray.trial.scalars import Scalar, ScalarWatcher, as_logged, scalar_series


def _write(path, tag, value, step):
    with SummaryWriter(str(path)) as writer:
        writer.add_scalar(tag, value, step)


def _started(run_dir):
    """`run_dir` as Guild leaves a run once its op starts: an opref, no
    PENDING (its dependencies are in place)."""
    (run_dir / ".guild").mkdir(parents=True, exist_ok=True)
    (run_dir / ".guild" / "opref").write_text("guildfile:guild.yml '' '' op\n")
    return run_dir


def test_poll_returns_only_new_values(tmp_path):
    run_dir = tmp_path / "run"
    watcher = ScalarWatcher(str(run_dir))
    assert watcher.poll() == []  # the run has not started yet

    guild_dir = _started(run_dir) / ".guild"
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
    run_dir = _started(tmp_path / "run")
    watcher = ScalarWatcher(str(run_dir), rescan_seconds=3600)
    watcher.poll(final=True)  # scanned once: nothing yet

    _write(run_dir / "logs" / "val", "acc_val", 0.625, 3)
    assert watcher.poll() == []  # not rescanned yet
    assert watcher.poll(final=True) == [("acc_val", Scalar(0.625, 3))]


def test_output_scalars_win_over_a_scripts_own_tag(tmp_path):
    run_dir = _started(tmp_path / "run")
    _write(run_dir / "logs", "acc", 0.125, 0)
    _write(run_dir / ".guild", "acc", 0.25, 0)
    watcher = ScalarWatcher(str(run_dir))
    watcher.poll(final=True)
    assert watcher.latest == {"acc": Scalar(0.25, 0)}


def test_links_to_other_runs_are_not_read(tmp_path):
    other = tmp_path / "other"
    _write(other / "logs", "acc", 0.5, 0)
    run_dir = _started(tmp_path / "run")
    (run_dir / "upstream").symlink_to(other)
    assert ScalarWatcher(str(run_dir)).poll(final=True) == []


def test_values_are_read_as_the_step_logged_them(tmp_path):
    """Guild stores `acc: 0.963889` in 32 bits, 0.9638890027999878: it is read
    back as 0.963889, here and in all that gpkg.ray writes from it (the
    objective, trials.csv, the records). A value stored in 64 bits is kept."""
    run_dir = _started(tmp_path / "run")
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


def _dependency(run_dir, relpath: str, source="operation:train") -> None:
    """Notes `relpath` in the run's manifest as Guild does for what it put in
    from a dependency (guild/run_manifest.py `resolved_source_args`)."""
    from guild import manifest

    with manifest.Manifest(str(run_dir / ".guild" / "manifest"), "a") as m:
        m.write(["d", relpath, "-", source])


def test_event_files_of_dependencies_are_not_the_runs_own(tmp_path):
    """Guild copies (by default) or links a required run's top-level entries
    into the run: `train`'s event files were read as `evaluate`'s (issue 18)."""
    train = _started(tmp_path / "train")
    _write(train, "acc_val", 0.875, 0)  # a script's writer at the run's root
    _write(train / "logs", "acc_val", 0.75, 0)
    (train_file,) = [p for p in train.iterdir() if ".tfevents." in p.name]
    run_dir = _started(tmp_path / "evaluate")
    shutil.copy(train_file, run_dir)  # Guild's default target-type: copy
    _dependency(run_dir, train_file.name)
    shutil.copytree(train / "logs", run_dir / "logs")  # a directory, copied
    _dependency(run_dir, "logs")
    (run_dir / "linked").mkdir()  # target-type: link, into a folder of its own
    (run_dir / "linked" / train_file.name).symlink_to(train_file)
    _write(run_dir / "own", "loss", 0.5, 0)  # what evaluate wrote itself

    watcher = ScalarWatcher(str(run_dir))
    assert watcher.latest_final() == {"loss": Scalar(0.5, 0)}
    assert scalar_series(str(run_dir), "acc_val") == []
    assert scalar_series(str(run_dir), "loss") == [Scalar(0.5, 0)]


def test_nothing_but_output_scalars_is_read_while_guild_resolves_dependencies(
    tmp_path,
):
    """Guild copies a run's dependencies while the run is PENDING, and notes
    each in the manifest once copied: a file seen then may be one of them."""
    run_dir = _started(tmp_path / "evaluate")
    (run_dir / ".guild" / "PENDING").touch()
    _write(run_dir, "acc_val", 0.875, 0)  # copied, not yet in the manifest
    watcher = ScalarWatcher(str(run_dir))
    assert watcher.poll(final=True) == []

    _dependency(run_dir, next(p.name for p in run_dir.glob("*.tfevents.*")))
    (run_dir / ".guild" / "PENDING").unlink()
    _write(run_dir / ".guild", "loss", 0.5, 0)
    assert watcher.poll(final=True) == [("loss", Scalar(0.5, 0))]


DEPENDENT_PROJECT = """
train:
  main: train
evaluate:
  main: evaluate
  requires:
    - operation: train
evaluate-link:
  main: evaluate
  requires:
    - operation: train
      target-type: link
"""


@pytest.mark.e2e
def test_a_required_runs_event_files_are_not_read_as_the_steps_own(project):
    """Real `guild run`s: `train` writes event files at its root, as a script
    with a SummaryWriter('.') does; `evaluate` requires it, and logs `loss`."""
    project.write("guild.yml", DEPENDENT_PROJECT)
    project.write(
        "train.py",
        """
        from guild.summary import SummaryWriter

        with SummaryWriter(".") as writer:
            writer.add_scalar("acc_val", 0.875, 0)
        """,
    )
    project.write("evaluate.py", 'print("loss: 0.5")\n')
    for op in ("train", "evaluate", "evaluate-link"):
        result = project.guild("run", "-y", op)
        assert result.returncode == 0, result.stderr

    for op in ("evaluate", "evaluate-link"):
        (run,) = project.runs_of(op)
        assert any(".tfevents." in name for name in os.listdir(run.dir)), op
        latest = ScalarWatcher(run.dir).latest_final()  # and Guild's sys/*
        assert "acc_val" not in latest and latest["loss"] == Scalar(0.5, 0), op
        assert scalar_series(run.dir, "acc_val") == [], op
