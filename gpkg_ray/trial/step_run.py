"""One trial step: a `guild run` process with a known run id."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from typing import Any

from guild import flag_util

from gpkg_ray.processes import process_tree, stop_processes
from gpkg_ray.trial.workspace import Workspace

# What `guild run` prints on stderr that is not an error.
GUILD_NOTES = {"Refreshing flags..."}


class StepRun:
    """Starts `guild run OP flag=value ...` in the project directory.

    The run id is chosen here (`--run-id`), so the run directory is known before
    Guild creates it and the run can be reported, watched and stopped by id.
    """

    def __init__(
        self,
        workspace: Workspace,
        op: str,
        flags: dict[str, Any],
        run_id: str,
        tags: tuple[str, ...] = (),
    ):
        self.workspace = workspace
        self.op = op
        self.flags = flags
        self.run_id = run_id
        self.tags = tags
        self._proc: subprocess.Popen | None = None
        # Guild saves the step's output in its run; stderr is kept here too, since
        # `guild run` writes its own errors there. Closed in close().
        self._stderr = tempfile.TemporaryFile(mode="w+b", prefix="gpkg-ray-step-")  # noqa: SIM115

    @property
    def run_dir(self) -> str:
        return self.workspace.run_dir(self.run_id)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "guild.main_bootstrap", "run", "-y"]
        cmd += ["--run-id", self.run_id]
        for tag in self.tags:
            cmd += ["--tag", tag]
        cmd.append(self.op)
        cmd += [
            f"{name}={flag_util.encode_flag_val(val)}"
            for name, val in self.flags.items()
        ]
        return cmd

    def start(self) -> StepRun:
        # Same session as the Ray worker (no start_new_session): when Ray ends the
        # worker, the step's process group goes with it.
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.workspace.project_dir,
            env=self.workspace.step_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        return self

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None if still running after `timeout` seconds."""
        assert self._proc is not None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Ends the `guild run` process and everything it started, if still alive."""
        if self._proc is None or self._proc.poll() is not None:
            return
        stop_processes(process_tree(self._proc.pid))
        self._proc.wait()

    def error_line(self) -> str:
        """Last meaningful line on stderr: the op's error or Guild's, usually."""
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").splitlines()
        for line in reversed(lines):
            line = line.strip()
            if line and not line.startswith("WARNING:") and line not in GUILD_NOTES:
                return line[:300]
        return ""

    def close(self) -> None:
        self.stop()
        self._stderr.close()


def new_run_id() -> str:
    return uuid.uuid4().hex
