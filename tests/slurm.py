"""A real one-node SLURM on this machine, for tests: munged, slurmctld and
slurmd from Debian's `munge` and `slurm-wlm`, configured in a temp dir and
run in the foreground as children of the test, so that each is stopped by
its handle (never by name) and nothing is left when the test ends.

Everything of this SLURM is under its temp dir: its config (SLURM_CONF),
state, spool, logs, and munged's socket, pid and seed files (its key is the
package's /etc/munge/munge.key); it listens on 127.0.0.1 only (slurmctld on
`ctld_port`, slurmd on `slurmd_port`). Root only: slurmd runs jobs as their
user, and munged runs as user munge.

`python tests/slurm.py` starts one, runs `sinfo` and a one-line `sbatch`,
and stops it: a manual check of the setup.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
START_TIMEOUT = 30.0


def missing_reason() -> str | None:
    """Why a local SLURM cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a local SLURM needs root (slurmd runs jobs as their user)"
    missing = [p for p in NEEDED if _which(p) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed: `apt-get install -y slurm-wlm "
            "munge` (.ci/run does it where it is root)"
        )
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no user munge (the munge package makes it)"
    if not os.path.exists("/etc/munge/munge.key"):
        return "no /etc/munge/munge.key (the munge package makes it)"
    return None


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """One SLURM node (this machine, named by its hostname at 127.0.0.1) in
    partition `debug`, with `cpus` CPUs."""

    def __init__(self, cpus: int = 2):
        self.dir = Path(tempfile.mkdtemp(prefix="gpkg-slurm-"))
        # munged (user munge) must reach its subdir; others get no listing.
        os.chmod(self.dir, 0o711)
        self.cpus = cpus
        self.node = socket.gethostname()
        self.procs: list[subprocess.Popen] = []
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What SLURM's commands need to talk to this SLURM."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        try:
            self._start_munged()
            self._write_conf()
            self._start("slurmctld", ["-D", "-f", str(self.conf)])
            self._wait_for_controller()
            self._start("slurmd", ["-D", "-f", str(self.conf)])
            self._wait_for_node()
        except BaseException:
            self.stop()
            raise

    def _start_munged(self) -> None:
        munge_dir = self.dir / "munge"
        munge_dir.mkdir()
        # munged wants its socket dir searchable by all (clients connect).
        os.chmod(munge_dir, 0o711)
        shutil.chown(munge_dir, "munge", "munge")
        self._start(
            "munged",
            [
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
                f"--log-file={munge_dir / 'munged.log'}",
            ],
            user="munge",
        )
        self._wait(lambda: self.munge_socket.exists(), "munged's socket")

    def _write_conf(self) -> None:
        d = self.dir
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        lines = {
            "ClusterName": "gpkgtest",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": self.ctld_port,
            "SlurmdPort": self.slurmd_port,
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": d / "state",
            "SlurmdSpoolDir": d / "spool",
            "SlurmctldPidFile": d / "slurmctld.pid",
            "SlurmdPidFile": d / "slurmd.pid",
            "SlurmctldLogFile": d / "slurmctld.log",
            "SlurmdLogFile": d / "slurmd.log",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "ReturnToService": 2,
            "MpiDefault": "none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            # A job past its time limit is signalled at once; Ray has 10 s to stop.
            "KillWait": 10,
            "OverTimeLimit": 0,
            "MinJobAge": 300,
            "SchedulerParameters": "sched_interval=1",
            "NodeName": f"{self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            "State=UNKNOWN",
            "PartitionName": "debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        }
        self.conf.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def _start(self, program: str, args: list[str], user: str | None = None) -> None:
        command = [_which(program) or program, *args]
        with open(self.dir / f"{program}.out", "w") as log:
            self.procs.append(
                subprocess.Popen(
                    command,
                    env={**os.environ, **self.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    user=user,
                )
            )

    def _wait_for_controller(self) -> None:
        self._wait(lambda: self._ok("sinfo", "-h"), "slurmctld")

    def _wait_for_node(self) -> None:
        def idle() -> bool:
            out = self.run("sinfo", "-h", "-N", "-o", "%T").stdout
            return out.strip() == "idle"

        self._wait(idle, "the node to be idle")

    def _ok(self, *command: str) -> bool:
        return self.run(*command).returncode == 0

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{proc.args[0]} exited {proc.returncode} while waiting "
                        f"for {what}: see {self.dir}"
                    )
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}: see {self.dir}")

    def stop(self) -> None:
        """Cancels the jobs left and waits for them, ends what is left of
        them, then stops the daemons (slurmd first), each by its handle, with
        whatever they started; removes the temp dir."""
        if self.procs and all(proc.poll() is None for proc in self.procs):
            self._cancel_jobs()
        for stepd in self._stepds():  # a job step that outlived its job
            with contextlib.suppress(psutil.NoSuchProcess):
                for p in [stepd, *stepd.children(recursive=True)]:
                    p.kill()
        for proc in reversed(self.procs):
            tree = []
            with contextlib.suppress(psutil.NoSuchProcess):
                tree = psutil.Process(proc.pid).children(recursive=True)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)

    def _cancel_jobs(self) -> None:
        jobs = self.run("squeue", "-h", "-o", "%i").stdout.split()
        if jobs:
            self.run("scancel", *jobs)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-o", "%i").stdout.split():
                return
            time.sleep(0.5)

    def _stepds(self) -> list[psutil.Process]:
        """slurmstepd processes of this SLURM: each has its socket in our
        SlurmdSpoolDir (slurmd starts them detached, not as its children)."""
        spool = str(self.dir / "spool")
        found = []
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != "slurmstepd":
                continue
            with contextlib.suppress(psutil.Error):
                sockets = proc.net_connections(kind="unix")
                if any(str(c.laddr).startswith(spool) for c in sockets):
                    found.append(proc)
        return found


if __name__ == "__main__":
    slurm = LocalSlurm()
    slurm.start()
    try:
        print(slurm.run("sinfo").stdout)
        out = slurm.dir / "job.out"
        done = slurm.run("sbatch", "--wrap", "hostname; srun hostname", "-o", str(out))
        print(done.stdout, done.stderr)
        time.sleep(3)
        print(slurm.run("squeue").stdout)
        print(out.read_text() if out.exists() else "no output")
    finally:
        slurm.stop()
