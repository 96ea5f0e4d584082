"""benchmarks/fault_injection.py --quick: a tune killed with SIGKILL at two
points (Ray up but not yet journaled; steps running), restarted with `guild
run --restart` until it completes; the script checks the trials, runs,
processes and temp files, and prints a table. The full run (every point) is
quoted in benchmarks/README.md."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

# Real `guild` runs and Ray; a benchmark script, run as the others are.
pytestmark = [pytest.mark.e2e, pytest.mark.benchmark]

COLUMNS = "point kills restarts trials dups running procs temp wall s result"


def test_fault_injection_quick(guild_env):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fault_injection.py"), "--quick"],
        env=guild_env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == COLUMNS.split())
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[0] for row in rows] == ["ray-starting", "steps-running"]
    for row in rows:
        # killed once, restarted once, 2 trials, nothing twice or left over
        assert row[1:8] == ["1", "1", "2", "0", "0", "0", "0"], row
        assert row[-1] == "OK"
    assert "2/2 OK" in result.stdout
