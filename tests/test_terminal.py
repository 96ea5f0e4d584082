"""`guild compare` in a real terminal: tmux runs it, the test reads the screen.

Guild's interactive compare starts tabview with an empty table and fills it
itself; tabview 1.5.0 refuses that table ("tabview: no data to display"), so
the package bounds tabview below 1.5 (guild.yml `requires`, issue 17).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
from conftest import GUILD, Project
from projects import write_project

pytestmark = pytest.mark.e2e  # real `guild` runs, Ray and a terminal

TMUX = shutil.which("tmux")
SCREEN_TIMEOUT = 30


@pytest.fixture(scope="module")
def tuned(new_project) -> Project:
    """A project with a tune of 2 trials done."""
    project = new_project()
    write_project(project)
    result = project.tune("max-trials=2", "seed=3")
    assert result.returncode == 0, result.stdout + result.stderr
    return project


class Terminal:
    """A detached tmux session on a server of its own (its own socket, no
    user config), 200x50, running one command."""

    def __init__(self, project: Project):
        self.socket = f"gpkg-ray-test-{uuid.uuid4().hex[:12]}"
        self.project = project
        # tmux makes its socket dir (tmux-UID) in TMUX_TMPDIR, else in /tmp,
        # and leaves it there: a temp dir of the test's own instead (short:
        # a socket path is at most 107 bytes).
        self.tmux_tmpdir = tempfile.mkdtemp(prefix="gpkg-tmux-")

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        assert TMUX
        return subprocess.run(
            [TMUX, "-L", self.socket, "-f", os.devnull, *args],
            env={**os.environ, "TMUX_TMPDIR": self.tmux_tmpdir},
            capture_output=True,
            text=True,
            timeout=10,
        )

    def start(self, *command: str) -> None:
        env = self.project.env
        # The project's env with the venv's bin first (its `guild`); the
        # terminal's own size, not the tests' COLUMNS. Given by `env` in the
        # command: the tmux server's global environment is this process's.
        exports = {
            "HOME": env["HOME"],
            "GUILD_HOME": env["GUILD_HOME"],
            "PATH": f"{os.path.dirname(GUILD)}:{env.get('PATH', '')}",
            "PYTHONWARNINGS": env["PYTHONWARNINGS"],
            "NO_PIP_FREEZE": "1",
            "TERM": "xterm-256color",
        }
        line = shlex.join(
            [
                "env",
                "-u",
                "COLUMNS",
                "-u",
                "LINES",
                *(f"{name}={value}" for name, value in exports.items()),
                *command,
            ]
        )
        # `; sleep` keeps the pane after the command ends, so what it printed
        # on failure can still be read.
        result = self.tmux(
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-c",
            str(self.project.path),
            f"{line}; sleep 60",
        )
        assert result.returncode == 0, result.stderr

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p").stdout

    def wait_for(self, *texts: str) -> str:
        """The screen once it shows one of `texts`, or after SCREEN_TIMEOUT."""
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while True:
            screen = self.screen()
            if any(t in screen for t in texts) or time.monotonic() > deadline:
                return screen
            time.sleep(0.2)

    def kill(self) -> None:
        self.tmux("kill-server")
        # The server leaves its socket file (and its dir) behind.
        shutil.rmtree(self.tmux_tmpdir, ignore_errors=True)


@pytest.fixture
def terminal(tuned: Project) -> Iterator[Terminal]:
    if TMUX is None:
        pytest.skip("tmux is not installed: the terminal test needs it")
    term = Terminal(tuned)
    try:
        yield term
    finally:
        # Its own server, by its own socket: ends the session and its processes.
        term.kill()


def test_compare_shows_trials_in_a_terminal(tuned: Project, terminal: Terminal):
    trial_runs = [r.short_id for r in tuned.runs_of("trial")]
    assert len(trial_runs) == 2
    terminal.start("guild", "compare", "-Fo", "trial")
    screen = terminal.wait_for(trial_runs[0], "no data to display")
    assert "no data to display" not in screen, screen
    for run_id in trial_runs:
        assert run_id in screen, screen
    # Guild's header row and the trials' op and flags.
    assert "operation" in screen and "gpkg.ray/trial" in screen, screen
    assert "lr" in screen and "acc_val" in screen, screen

    terminal.tmux("send-keys", "q")
    deadline = time.monotonic() + SCREEN_TIMEOUT
    while (
        terminal.tmux("list-panes", "-F", "#{pane_current_command}").stdout.strip()
        != "sleep"
    ):
        assert time.monotonic() < deadline, "guild compare did not quit on 'q'"
        time.sleep(0.2)
