"""Running `guild` in a throwaway Guild home, timed: shared by the benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GUILD = str(Path(sys.executable).parent / "guild")


class GuildHome:
    """A temp GUILD_HOME, removed on exit."""

    def __enter__(self) -> GuildHome:
        self.path = Path(tempfile.mkdtemp(prefix="gpkg-ray-bench-"))
        self.env = {**os.environ, "GUILD_HOME": str(self.path), "NO_PIP_FREEZE": "1"}
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def run(self, cwd: Path, *args: str) -> float:
        """`guild run -y ARGS` in `cwd`; its wall seconds. Exits on failure."""
        started = time.monotonic()
        result = subprocess.run(
            [GUILD, "run", "-y", *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
        if result.returncode != 0:
            sys.exit(
                f"guild run {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
        return wall

    def trials(self) -> list[dict]:
        """The trials of the one tune run in this home (its trials.json)."""
        (trials_json,) = (self.path / "runs").glob("*/trials.json")
        return json.loads(trials_json.read_text())["trials"]

    def started(self) -> float:
        """When Guild started the tune run (Unix seconds)."""
        (trials_json,) = (self.path / "runs").glob("*/trials.json")
        started_attr = trials_json.parent / ".guild" / "attrs" / "started"
        return int(started_attr.read_text().strip()) / 1e6
