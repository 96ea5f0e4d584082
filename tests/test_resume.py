"""Resume and crash safety, end to end: a tune killed with SIGKILL, then
restarted with `guild run --restart`, ends with exactly max-trials trials, none
run twice, every run with a final status and nothing of the killed attempt left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal

import psutil
import pytest
from conftest import Watched, still_running
from projects import tune_config, write_project

from gpkg_ray.processes import process_tree

pytestmark = pytest.mark.e2e  # real `guild` runs and Ray

# Four, two at once: with three, the mid-search kill point (a trial ended,
# one still to start) was missed under load, the third starting at once.
MAX_TRIALS = 4
FLAGS = (f"max-trials={MAX_TRIALS}", "max-concurrent=2", "search=random", "seed=5")
SPACE = """
    lr: loguniform[1e-3:1e-1]
    train:epochs: 4
    train:sleep: 0.5
    """
FINAL = {"completed", "terminated"}


def _journal(run_dir: str) -> tuple[list[dict], dict[int, dict]]:
    """Attempts and latest trial outcomes in a tune run's journal."""
    attempts, trials = [], {}
    path = os.path.join(run_dir, "journal.jsonl")
    if not os.path.exists(path):
        return attempts, trials
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry["event"] == "attempt":
                attempts.append(entry)
            elif entry["event"] == "ray":
                attempts[-1].update(entry)
            elif entry["event"] == "trial":
                trials[entry["outcome"]["trial"]] = entry["outcome"]
    return attempts, trials


def _running_with_runs(trials: dict) -> list[dict]:
    return [t for t in trials.values() if t["status"] == "running" and t["runs"]]


def _ended(trials: dict) -> list[dict]:
    return [t for t in trials.values() if t["status"] != "running"]


# When to kill: a test of the journal's trials.
KILL_POINTS = {
    "before the first trial ends": lambda trials: (
        _running_with_runs(trials) and not _ended(trials)
    ),
    "mid-search": lambda trials: (
        0 < len(_ended(trials)) < MAX_TRIALS - 1 and _running_with_runs(trials)
    ),
    "during the last trial": lambda trials: (
        len(_ended(trials)) == MAX_TRIALS - 1 and _running_with_runs(trials)
    ),
    "during evaluate": lambda trials: any(
        "evaluate" in t["runs"] for t in _running_with_runs(trials)
    ),
}


def _victims(driver: psutil.Process, what: str) -> list[psutil.Process]:
    """The processes a crash takes: the tune driver alone (an OOM kill), the
    driver and its Ray (the trials' `guild run` processes go on as orphans),
    or everything (the machine went down)."""
    tree = process_tree(driver.pid)
    if what == "driver":
        return tree[:1]
    if what == "everything":
        return tree
    steps = set()
    for proc in tree:
        try:
            if "guild.main_bootstrap" in " ".join(proc.cmdline()):
                steps.update(p.pid for p in process_tree(proc.pid))
        except psutil.NoSuchProcess:
            pass
    return [p for p in tree if p.pid not in steps]


class KilledTune:
    """A tune, watched (Project.watch_tune) and killed with SIGKILL at a kill
    point: the watch's callback reads the journal at each sample."""

    def __init__(self, project, *flags: str):
        self.project = project
        self.flags = flags
        self.trials_at_kill: dict[int, dict] = {}
        self.watched: Watched | None = None

    def kill_when(self, point: str, what: str) -> None:
        def kill_at_point(_proc) -> None:
            driver = None if self.trials_at_kill else self._driver()
            if driver is None:
                return
            _, trials = _journal(self.run.dir)
            if KILL_POINTS[point](trials):
                self.trials_at_kill = trials
                for victim in _victims(driver, what):
                    # One may have ended since it was listed: so much the better.
                    with contextlib.suppress(psutil.NoSuchProcess):
                        victim.send_signal(signal.SIGKILL)

        # Guild's parent records the exit of the killed driver, then ends.
        self.watched = self.project.watch_tune(*self.flags, during=kill_at_point)
        if not self.trials_at_kill:
            pytest.fail(f"the tune never reached '{point}': {self.watched.output}")

    @property
    def seen(self) -> list[psutil.Process]:
        """The processes of the killed tune."""
        return self.watched.processes

    @property
    def run(self):
        return self.project.tune_run()

    def _driver(self) -> psutil.Process | None:
        if not self.project.runs_of("tune"):
            return None
        pid = self.run._get_pid()
        try:
            return psutil.Process(pid) if pid else None
        except psutil.NoSuchProcess:
            return None


def _assert_exact_trials(project, tune_run, elsewhere=frozenset()) -> list[dict]:
    """max-trials trials, each completed once: every completed `evaluate` run (a
    trial's last step) is the one run of exactly one trial. Runs in `elsewhere`
    live in another Guild home."""
    trials = project.trials(tune_run)
    assert [t["trial"] for t in trials] == list(range(1, MAX_TRIALS + 1))
    assert {t["status"] for t in trials} == {"completed"}, trials
    statuses = project.statuses("evaluate")
    completed = {run_id for run_id, s in statuses.items() if s == "completed"}
    assert completed == {t["runs"]["evaluate"] for t in trials} - elsewhere
    records = project.statuses("trial")
    assert sorted(records.values()) == ["completed"] * MAX_TRIALS
    return trials


@pytest.mark.parametrize(
    ("point", "what"),
    [
        ("before the first trial ends", "driver"),
        ("mid-search", "driver and its Ray"),
        ("during the last trial", "everything"),
    ],
)
def test_a_killed_tune_restarts_and_runs_only_what_is_missing(project, point, what):
    write_project(project, tune_config(SPACE))
    # Two at a time, the last trial often runs alone for under a second: one
    # at a time, it runs alone for all of its steps.
    flags = [*FLAGS, "max-concurrent=1"] if point == "during the last trial" else FLAGS
    killed = KilledTune(project, *flags)
    killed.kill_when(point, what)
    tune_id = killed.run.id
    at_kill = killed.trials_at_kill
    interrupted = {n: t for n, t in at_kill.items() if t["status"] == "running"}
    ended_before = {n: t for n, t in at_kill.items() if n not in interrupted}

    watched = project.watch_restart(tune_id)

    assert watched.returncode == 0, watched.output
    assert "Resuming (attempt 2): " in watched.output
    trials = {t["trial"]: t for t in _assert_exact_trials(project, killed.run)}
    for number, before in ended_before.items():  # kept, not run again
        assert trials[number]["runs"] == before["runs"]
        assert trials[number]["objective"] == before["objective"]
    for number, before in interrupted.items():
        trial = trials[number]
        if trial["attempt"] == 1:
            # It finished while the tune was down: its runs were all it needed.
            assert trial["runs"] == before["runs"]
            continue
        assert trial["values"] == before["values"]
        assert [run for _, run in trial["earlier_runs"]] == list(
            before["runs"].values()
        )
        record = project.run(trial["record"])
        links = project.record_links(record)
        for i, (step, run_id) in enumerate(trial["earlier_runs"], 1):
            run, name = project.run(run_id), f"{step}~{i}"
            if not os.path.exists(run.dir):  # the kill came before Guild made it
                assert name not in links
                continue
            assert run.status in FINAL
            assert links[name] == run_id
    statuses = project.statuses()
    assert set(statuses.values()) <= FINAL, statuses
    assert project.run(tune_id).status == "completed"
    assert still_running(killed.seen + watched.processes) == []
    attempts, _ = _journal(killed.run.dir)
    assert len(attempts) == 2
    assert not os.path.exists(attempts[0]["ray_temp_dir"])


def test_a_tune_run_copied_to_another_guild_home_resumes_there(project, tmp_path):
    write_project(project, tune_config(SPACE))
    killed = KilledTune(project, *FLAGS)
    killed.kill_when("mid-search", "everything")
    ended_before = _ended(killed.trials_at_kill)
    other_home = tmp_path / "other-guild-home"
    shutil.copytree(killed.run.dir, other_home / "runs" / killed.run.id, symlinks=True)
    project.env["GUILD_HOME"] = str(other_home)
    project.guild_home = other_home

    watched = project.watch_restart(killed.run.id)

    assert watched.returncode == 0, watched.output
    elsewhere = {run_id for t in ended_before for run_id in t["runs"].values()}
    trials = _assert_exact_trials(project, project.tune_run(), elsewhere)
    trials = {t["trial"]: t for t in trials}
    for before in ended_before:  # known from the journal, not run again
        assert trials[before["trial"]]["runs"] == before["runs"]
    rows = project.compare("-Fo", "trial")
    assert len(rows) == MAX_TRIALS


def test_warm_start_tells_the_searcher_earlier_trials(project):
    # One step a trial, to keep it quick: train's last loss is lr.
    write_project(
        project,
        "steps: [train]\noptimize:\n  - min: loss\nspace:\n"
        "  lr: loguniform[1e-3:1e-1]\n  train:epochs: 1\n",
    )
    earlier = project.tune("search=random", "max-trials=12", "seed=1")
    assert earlier.returncode == 0, earlier.stderr
    (earlier_run,) = project.runs_of("tune")
    told = sorted(t["values"]["lr"] for t in project.trials(earlier_run))
    tpe = ("search=tpe", "max-trials=1", "seed=2")

    warm = project.tune(*tpe, "warm-start=operation")
    cold = project.tune(*tpe)

    assert warm.returncode == 0 and cold.returncode == 0, warm.stderr + cold.stderr
    assert (
        f"Warm start: 12 trials of 1 earlier runs ({earlier_run.short_id})"
        in warm.stdout
    )
    warm_run, cold_run = sorted(
        (r for r in project.runs_of("tune") if r.id != earlier_run.id),
        key=lambda r: r.get("started"),
    )
    with open(os.path.join(warm_run.dir, "trials.json")) as f:
        assert json.load(f)["warm_start"] == {"runs": [earlier_run.id], "trials": 12}
    # The loss is lr: told the earlier trials, TPE suggests next to the best
    # of them from its first trial; cold, with the same seed, it does not.
    warm_lrs = [t["values"]["lr"] for t in project.trials(warm_run)]
    cold_lrs = [t["values"]["lr"] for t in project.trials(cold_run)]
    assert max(warm_lrs) < told[1], (warm_lrs, told)
    assert max(cold_lrs) > told[1], (cold_lrs, told)


def test_a_failed_trial_runs_again_up_to_max_failures(project):
    write_project(project, tune_config("lr: 0.01\ntrain:mode: [flaky, crash]\n"))

    watched = project.watch_tune("search=grid", "max-failures=1", "max-concurrent=2")

    assert watched.returncode == 0, watched.output
    trials = {t["values"]["train:mode"]: t for t in project.trials()}
    flaky, crash = trials["flaky"], trials["crash"]
    assert (flaky["status"], flaky["attempt"]) == ("completed", 2)
    assert (crash["status"], crash["attempt"]) == ("failed", 2)
    assert "train crashed on purpose" in crash["error"]
    for trial in (flaky, crash):
        ((step, earlier),) = trial["earlier_runs"]
        assert step == "train" and project.run(earlier).status == "error"
        record = project.run(trial["record"])
        assert project.record_links(record)["train~1"] == earlier
    assert f"trial {flaky['trial']}/2 runs again (attempt 2): attempt 1 failed" in (
        watched.output
    )
    assert len(project.runs_of("train")) == 4


# `evaluate`, held until the test releases it: a kill is sure to come while it
# runs, after its `train` completed.
HELD_EVALUATE = """
import json
import os
import time

release = os.path.join(os.environ["PROJECT_DIR"], "release-evaluate")
deadline = time.time() + 120  # a test that fails does not hang here
while not os.path.exists(release) and time.time() < deadline:
    time.sleep(0.05)
with open("model.json") as f:
    model = json.load(f)
print(f"acc_val: {1 - model['lr']:.6f}")
"""


def test_a_restarted_trial_reuses_the_steps_it_completed(project):
    write_project(project, tune_config("lr: loguniform[1e-3:1e-1]\ntrain:epochs: 3"))
    project.write("evaluate.py", HELD_EVALUATE)
    killed = KilledTune(project, "max-trials=1", "search=random", "seed=3")
    killed.kill_when("during evaluate", "everything")
    (before,) = killed.trials_at_kill.values()
    train_id = before["runs"]["train"]
    assert project.run(train_id).status == "completed"
    project.write("release-evaluate", "")

    watched = project.watch_restart(killed.run.id)

    assert watched.returncode == 0, watched.output
    assert f"trial 1/1: train reused (run {train_id[:8]})" in watched.output
    (trial,) = project.trials(killed.run)
    assert (trial["status"], trial["attempt"]) == ("completed", 2), trial
    # The same train run, not a new one; evaluate ran again, on it.
    assert trial["runs"]["train"] == train_id
    assert [r.id for r in project.runs_of("train")] == [train_id]
    evaluate = project.run(trial["runs"]["evaluate"])
    assert evaluate.id != before["runs"]["evaluate"]
    assert evaluate.status == "completed"
    assert evaluate.get("flags")["operation:train"] == train_id
    # Killed with everything: `error` if its `guild run` saw the op die first.
    assert project.run(before["runs"]["evaluate"]).status in ("terminated", "error")
    # The reused run's scalars count as the step's results, as if it ran now.
    lr = trial["values"]["lr"]
    assert trial["metrics"]["train/loss"] == pytest.approx(lr, abs=1e-6)
    assert trial["objective"] == pytest.approx(1 - lr, abs=1e-6)
    assert trial["reused"] == {"train": train_id}
    record = project.run(trial["record"])
    assert project.record_links(record)["train"] == train_id
    assert "best" in project.run(train_id).get("tags")
    assert still_running(killed.seen + watched.processes) == []
