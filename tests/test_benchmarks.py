"""The benchmark scripts run (`--quick`) and print their tables; their figures
are not checked here: timings belong to benchmark runs, not to tests."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_early_stopping_benchmark_quick(guild_env):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "early_stopping.py"), "--quick"],
        env=guild_env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scheduler"))
    fifo, asha = (lines[header + 1].split(), lines[header + 2].split())
    assert fifo[0] == "fifo" and asha[0] == "asha"
    assert fifo[1] == asha[1] == "8"  # the same number of trials
    assert int(fifo[2]) == 8 and int(fifo[3]) == 0  # fifo stops nothing
    assert int(fifo[4]) == 8 * 9  # every trial ran its 9 epochs
    assert int(asha[4]) <= int(fifo[4])
    assert any(line.startswith("asha/fifo epochs") for line in lines)
    assert any(line.startswith("best gap") for line in lines)
