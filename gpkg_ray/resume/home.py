"""The runs of a Guild home, read as Guild does but without its run filters."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from guild import run as guild_run


def home_runs(guild_home: str) -> Iterator[guild_run.Run]:
    """Every run in `guild_home` (one that has an opref)."""
    runs_dir = os.path.join(guild_home, "runs")
    with contextlib.suppress(FileNotFoundError):
        for run_id in sorted(os.listdir(runs_dir)):
            run = guild_run.Run(run_id, os.path.join(runs_dir, run_id))
            if os.path.exists(run.guild_path("opref")):
                yield run
