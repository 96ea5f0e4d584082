"""benchmarks/fault_injection.py --quick: a tune killed with SIGKILL three
times (Ray up but not yet journaled; the restart, while it ends what that
left; the next restart, while steps run), restarted with `guild run
--restart` until it completes; the script checks the trials, runs, processes
and temp files, and prints a table. The full run (every point) is
quoted in benchmarks/README.md."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

# Real `guild` runs and Ray; a benchmark script, run as the others are.
pytestmark = [pytest.mark.e2e, pytest.mark.benchmark]

COLUMNS = "point kills orphans restarts trials dups running procs temp wall s result"


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
    row = lines[header + 1].split()
    # Killed three times, restarted three times, 2 trials, nothing twice or
    # left over.
    assert row[:2] == ["chain", "3"] and int(row[2]) >= 0
    assert row[3:9] == ["3", "2", "0", "0", "0", "0"], row
    assert row[-1] == "OK"
    assert "1/1 OK" in result.stdout
