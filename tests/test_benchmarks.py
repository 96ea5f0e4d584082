"""The benchmark scripts run (`--quick`) and print their tables; their figures
are not checked here: timings belong to benchmark runs, not to tests."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

# Real `guild` runs and Ray; `pytest -m benchmark` runs these alone.
pytestmark = [pytest.mark.e2e, pytest.mark.benchmark]


def _run_quick(script: str, guild_env, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--quick", *args],
        env=guild_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


# Fewer trials than --quick's where the script takes --trials: the tables are
# checked, not the figures.
EARLY_STOPPING_TRIALS = 2
OVERHEAD_TRIALS = 1


def test_early_stopping_benchmark_quick(guild_env):
    trials = EARLY_STOPPING_TRIALS
    lines = _run_quick("early_stopping.py", guild_env, f"--trials={trials}")

    header = next(i for i, line in enumerate(lines) if line.startswith("scheduler"))
    fifo, asha = (lines[header + 1].split(), lines[header + 2].split())
    assert fifo[0] == "fifo" and asha[0] == "asha"
    assert fifo[1] == asha[1] == str(trials)  # the same number of trials
    assert int(fifo[2]) == trials and int(fifo[3]) == 0  # fifo stops nothing
    assert int(fifo[4]) == trials * 9  # every trial ran its 9 epochs
    assert int(asha[4]) <= int(fifo[4])
    assert any(line.startswith("asha/fifo epochs") for line in lines)
    assert any(line.startswith("best gap") for line in lines)


def test_overhead_benchmark_quick(guild_env):
    lines = _run_quick("overhead.py", guild_env, f"--trials={OVERHEAD_TRIALS}")

    header = lines.index(f"{f'per trial ({OVERHEAD_TRIALS} trials)':<28}{'wall s':>8}")
    rows = [line.rsplit(None, 1) for line in lines[header + 1 : header + 5]]
    assert [name for name, _ in rows] == [
        "direct",
        "guild batch",
        "tune c=1",
        "tune c=2",
    ]
    assert all(float(seconds) > 0 for _, seconds in rows)
    for label in (
        "overhead c=1 vs direct",
        "launch to first trial c=1",
        "embedded Ray start",
    ):
        assert any(line.startswith(label) for line in lines), label


def test_parallel_benchmark_quick(guild_env):
    lines = _run_quick("parallel.py", guild_env)

    header = next(i for i, line in enumerate(lines) if line.startswith("way"))
    for row, concurrency in zip(
        lines[header + 1 : header + 3], ("1", "2"), strict=True
    ):
        cells = row.split()
        assert cells[:2] == ["tune", concurrency] and len(cells) == 8, row
        driver, tree_rss, tree_pss = map(int, cells[5:])  # MB
        assert float(cells[2]) > 0 and tree_rss > driver > 0
        assert 0 < tree_pss <= tree_rss
    direct = lines[header + 3].split()
    assert direct[:3] == ["guild", "runs", "2"] and float(direct[3]) > 0
    assert any(line.startswith("efficiency at concurrency 2") for line in lines)


def test_search_quality_benchmark_quick(guild_env):
    lines = _run_quick("search_quality.py", guild_env)

    header = next(i for i, line in enumerate(lines) if line.startswith("function"))
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[:2] for row in rows] == [["branin", "random"], ["branin", "tpe"]]
    for row in rows:  # best after all trials <= best after half; above the minimum
        assert float(row[4]) <= float(row[3]) <= float(row[2])
    assert any(line.startswith("tpe beats random") for line in lines)


def test_first_trial_benchmark_quick(guild_env):
    lines = _run_quick("first_trial.py", guild_env)

    header = next(i for i, line in enumerate(lines) if line.startswith("embedded Ray,"))
    rows = {
        line[:34].strip(): line[34:].split() for line in lines[header + 1 : header + 8]
    }
    assert list(rows) == [
        "Ray's own start (ray.init)",
        "embedded Ray start",
        "launch to tune run started",
        "launch to first trial",
        "launch to first step",
        "first step - Ray's own start",
        "Ray CPU per tune (s)",
    ]
    assert all(len(cells) == 3 for cells in rows.values()), rows
    times = [float(rows[name][0]) for name in list(rows)[2:5]]
    assert 0 < times[0] <= times[1] <= times[2]  # in the order they happen
    assert float(rows["Ray CPU per tune (s)"][0]) > 0
    assert any(line.startswith("target +2 s over Ray's own start") for line in lines)
    assert any(line.startswith("Ray CPU by process") for line in lines)


def test_scale_benchmark_quick(guild_env):
    lines = _run_quick("scale.py", guild_env)

    header = next(
        i for i, line in enumerate(lines) if line.lstrip().startswith("trials")
    )
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[:2] for row in rows] == [["3", "1-3"], ["6", "2-6"]], rows
    for row in rows:
        assert float(row[2]) > 0 and int(row[4]) > 0  # s/trial, driver MB
    assert any(line.startswith("cost per trial at 6 / at 3") for line in lines)
    assert any(line.startswith("curve, s/trial by tenth of the 6") for line in lines)
    assert any(line.startswith("driver RSS growth per 100 trials") for line in lines)
    files = next(i for i, line in enumerate(lines) if line.startswith("file of the"))
    assert lines[files + 1].startswith("journal.jsonl"), lines[files + 1]
    start = next(i for i, line in enumerate(lines) if line.startswith("restart ("))
    restart = {
        line.strip()[:32].strip(): line.strip()[32:].split()[0]
        for line in lines[start + 1 : start + 5]
    }
    assert list(restart) == [
        "launch to Ray up",
        "Ray up to the next trial start",
        "last trial end to exit",
        "trials in trials.json",
    ], restart
    assert float(restart["Ray up to the next trial start"]) > 0
    assert restart["trials in trials.json"] == "10"  # 6 + 4: none lost or twice
    compare = next(line for line in lines if line.startswith("guild compare"))
    assert compare.endswith("(10 rows)"), compare


def test_optuna_side_by_side_benchmark_quick(guild_env):
    lines = _run_quick("optuna_side_by_side.py", guild_env)

    plain = lines.index(next(line for line in lines if line.startswith("TPE, no")))
    names = [line[:24].strip() for line in lines[plain + 1 : plain + 3]]
    assert names == ["gpkg.ray", "optuna threads"]
    for line in lines[plain + 1 : plain + 3]:
        trials, epochs, wall, best, trial_seconds = line[24:].split()
        assert trials == "2" and int(epochs) == 6  # 2 trials x 3 epochs
        assert float(wall) > 0 and 0 < float(best) <= 1
        assert 0 < float(trial_seconds) < float(wall)
    assert any(line.startswith("gpkg.ray / optuna threads wall") for line in lines)
    pruned = lines.index(next(line for line in lines if line.startswith("TPE + early")))
    names = [line[:24].strip() for line in lines[pruned + 1 : pruned + 3]]
    assert names == ["gpkg.ray asha", "optuna threads sha"]
    assert any(line.startswith("to val_acc >= ") for line in lines)
