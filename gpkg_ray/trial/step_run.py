"""One trial step: a `guild run` process with a known run id."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
import time
import uuid
from typing import Any

import psutil

from gpkg_ray import faults, guild_api
from gpkg_ray.processes import (
    has_ended,
    process_tree,
    resume_processes,
    stop_processes,
)
from gpkg_ray.trial.launcher import StepLauncher, StepProcess
from gpkg_ray.trial.workspace import Workspace

# What `guild run` prints on stderr that is not an error.
GUILD_NOTES = {"Refreshing flags..."}

# Stopping a step while `guild run` is starting up: how long to wait for Guild to
# start the op (the op is stopped as `guild stop` does, see guild_api.stop_op).
START_WAIT_SECONDS = 5.0

STDERR_MAX_BYTES = 1024 * 1024
"""Largest the step's stderr file grows between two looks (see StepRun.wait):
past it, the file is emptied (its tail kept in memory). The op's own stderr
goes there too, through `guild run`: a chatty op would fill the disk."""
STDERR_TAIL_BYTES = 64 * 1024
"""How much of the end of the step's stderr is kept, for its error line."""
WAIT_SLICE_SECONDS = 0.5
"""How often a long wait looks at the step's stderr."""


class StepRun:
    """Starts `guild run OP flag=value ...` in the project directory, by
    `launcher` (see trial.launcher).

    The run id is chosen here (`--run-id`), so the run directory is known before
    Guild creates it and the run can be reported, watched and stopped by id.
    """

    def __init__(
        self,
        workspace: Workspace,
        launcher: StepLauncher,
        op: str,
        flags: dict[str, Any],
        run_id: str,
        tags: tuple[str, ...] = (),
        batch: str | None = None,
    ):
        """`batch`: the directory of the Guild batch run whose proto the run
        is a trial of (see Step.batch)."""
        self.workspace = workspace
        self.launcher = launcher
        self.op = op
        self.flags = flags
        self.run_id = run_id
        self.tags = tags
        self.batch = batch
        self._proc: StepProcess | None = None
        self._paused: list[psutil.Process] = []
        self._op: psutil.Process | None = None
        # Guild saves the step's output in its run; stderr is kept here too, since
        # `guild run` writes its own errors there. A file without a name
        # (O_TMPFILE), handed to the launcher open: nothing is ever left in the
        # temp dir, whichever process is killed when. Closed in close().
        self._stderr = tempfile.TemporaryFile(mode="w+b", prefix="gpkg-ray-step-")  # noqa: SIM115
        # Every write goes to the end, wherever that is: emptied, the file
        # takes the next write at its start, and a fresh step (which shares
        # this open file) leaves no hole.
        fd = self._stderr.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        self._stderr_tail = b""
        self._stderr_read = 0  # where the file's unread part starts

    @property
    def run_dir(self) -> str:
        return self.workspace.run_dir(self.run_id)

    def guild_args(self) -> list[str]:
        """The arguments of `guild`: `run -y --run-id ID OP flag=value...`;
        for a batch trial, made from the proto, `run -y --restart ID`, as
        Guild starts its own batch trials."""
        if self.batch is not None:
            return ["run", "-y", "--restart", self.run_id]
        cmd = ["run", "-y", "--run-id", self.run_id]
        for tag in self.tags:
            cmd += ["--tag", tag]
        cmd.append(self.op)
        cmd += [
            f"{name}={guild_api.encode_flag_val(val)}"
            for name, val in self.flags.items()
        ]
        return cmd

    def start(self) -> StepRun:
        if self.batch is not None:
            # As Guild's batch_util makes a trial: the proto copied, the
            # trial's flags and label, a link from the batch run.
            guild_api.init_trial_run(
                self.batch, self.run_dir, self.flags, list(self.tags)
            )
        self._proc = self.launcher.start(self.guild_args(), self._stderr)
        faults.point("step-starting")  # forked, its run not yet made
        return self

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None if still running after `timeout` seconds. Keeps
        the step's stderr file small meanwhile (STDERR_MAX_BYTES)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                status = self._proc.wait(max(0.0, min(left, WAIT_SLICE_SECONDS)))
            except subprocess.TimeoutExpired:
                status = None
            self._read_stderr()
            if status is None:
                self._stop_leftovers_of_ended_op()
            if status is not None or left <= WAIT_SLICE_SECONDS:
                return status

    def _stop_leftovers_of_ended_op(self) -> None:
        """Stops what the step daemonized once its op has ended: `guild run`
        reads the op's output until every copy of it is closed (before it
        reaps the op or records its exit status), and a daemon that kept one
        would hold the step open."""
        assert self._proc is not None
        leftovers = self._proc.leftovers()
        if leftovers and not _runs_a_child(self._proc.process):
            stop_processes(leftovers)

    def op_process(self) -> psutil.Process | None:
        """The step's op process, from its run's LOCK (a pid that is not this
        run's op is ignored); None until Guild has started it, and after it
        ended. Found once, then held: a handle knows when its process ended,
        and every poll asks (limits, pauses), which need not read the LOCK and
        the process's environment each time."""
        if self._op is None:
            self._op = guild_api.live_op(self._guild_run())
        return None if self._op is None or has_ended(self._op) else self._op

    def op_processes(self) -> list[psutil.Process]:
        """What a memory limit counts: the op's process tree and what the step
        daemonized (see StepProcess.leftovers); none once the op has ended."""
        op = self.op_process()
        if op is None or self._proc is None:
            return []
        return [*process_tree(op), *self._proc.leftovers()]

    def op_ended(self) -> bool:
        """Whether the op process has ended: Guild writes the run's exit status
        as soon as it does, before `guild run` itself exits."""
        return guild_api.has_exit_status(self._guild_run())

    def _guild_run(self) -> guild_api.Run:
        return guild_api.open_run(self.workspace.guild_home, self.run_id)

    def pause(self) -> bool:
        """Pauses the op's process tree (SIGSTOP), as a shell's Ctrl-Z does; the
        `guild run` process that reads its output goes on. Whether it paused
        (not when the op has ended)."""
        op = self.op_process()
        if op is None or self._paused:
            return bool(self._paused)
        for proc in process_tree(op):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.suspend()
                self._paused.append(proc)
        return bool(self._paused)

    def resume(self) -> None:
        """Continues what pause() paused (SIGCONT)."""
        paused, self._paused = self._paused, []
        resume_processes(paused)

    def stop(self) -> None:
        """Stops the step as `guild stop` does, if it still runs: SIGTERM to its op
        process tree, so Guild records the run as `terminated`. Whatever is left
        of the `guild run` process tree after that is ended too."""
        if self._proc is None or self._proc.poll() is not None:
            self.resume()  # anything of it left goes on to its end
            return
        op = self._wait_for_op()
        if op is not None:
            guild_api.stop_op(op)
            # What it daemonized, which may hold the op's output open (see wait).
            stop_processes(self._proc.leftovers())
            # Guild's `guild run` process records the exit status, then exits.
            self.wait(guild_api.STOP_GRACE_SECONDS)
        # By handle: the wait may have reaped `guild run`, and its pid may
        # name another process by now.
        if self._proc.process is not None:
            stop_processes(process_tree(self._proc.process))
        # The fork launcher stops what the step daemonized before it answers.
        self._proc.wait()
        self._paused = []  # stop_op continued them, to end

    def _wait_for_op(self) -> psutil.Process | None:
        assert self._proc is not None
        deadline = time.monotonic() + START_WAIT_SECONDS
        while self._proc.poll() is None and time.monotonic() < deadline:
            op = self.op_process()
            if op is not None:
                return op
            time.sleep(0.05)
        return None

    def _read_stderr(self) -> None:
        """Takes what the step wrote to stderr since the last look into the
        tail kept in memory (the end of it only, if it wrote much), and empties
        the file once it is over STDERR_MAX_BYTES. (A line written between the
        read and the emptying is lost: only ever past that size.)"""
        fd = self._stderr.fileno()
        size = os.fstat(fd).st_size
        start = max(self._stderr_read, size - STDERR_TAIL_BYTES)
        new = os.pread(fd, size - start, start) if size > start else b""
        self._stderr_tail = (self._stderr_tail + new)[-STDERR_TAIL_BYTES:]
        self._stderr_read = size
        if size > STDERR_MAX_BYTES:
            os.ftruncate(fd, 0)
            self._stderr_read = 0

    def error_line(self) -> str:
        """Last meaningful line on stderr: the op's error or Guild's, usually."""
        self._read_stderr()
        lines = self._stderr_tail.decode("utf-8", "replace").splitlines()
        for line in reversed(lines):
            line = line.strip()
            if line and not line.startswith("WARNING:") and line not in GUILD_NOTES:
                return line[:300]
        return ""

    def close(self) -> None:
        self.stop()
        self._stderr.close()


def _runs_a_child(proc: psutil.Process | None) -> bool:
    """Whether `proc` has a child that has not ended (a zombie has)."""
    try:
        children = proc.children() if proc is not None else []
    except psutil.NoSuchProcess:
        return False
    return not all(has_ended(child) for child in children)


def new_run_id() -> str:
    return uuid.uuid4().hex
