"""Separate hosts on this Linux machine, for tests: each host is a network
namespace with an address of its own, a private network joining them.

The first host holds a bridge with the address 10.X.Y.1/24; every other host
has a veth to it and the next address (10.X.Y.2, ...). The subnet comes from
this process's pid and the namespaces are named after it, so test sessions
that run at once do not meet; the addresses exist only inside these
namespaces, and no link of them is in the machine's own namespace.

A host's processes run in its namespace, and also in a PID, UTS and mount
namespace of its own (`unshare`): their pids and host name are the host's,
directories given as `hidden` are covered there by an empty tmpfs, and
switching the host off (`power_off`) ends every process on it at once, as a
machine that loses power: the host's init is killed, and with it everything
in its PID namespace. Needs root, `ip` (iproute2) and `unshare`
(util-linux).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

UP = "gpkg-host-up"
"""What a host's script prints once its commands ran."""


def missing_requirement() -> str | None:
    """Why separate hosts cannot be made here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "separate hosts need root (network namespaces)"
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"separate hosts need `{tool}`, which is not installed"
    probe = f"gpkg-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    netns: str
    ip: str
    dir: Path
    """The host's own files: `home` and `tmp` in it, and its log."""
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "host.log"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"

    def exec_prefix(self) -> list[str]:
        """Runs a command in this host's network namespace (not in its PID
        or mount namespace): a program of the host's user, the driver say."""
        return ["ip", "netns", "exec", self.netns]

    def pids(self) -> list[int]:
        """Every process in the host's network namespace (machine-wide pids)."""
        found = _ip("netns", "pids", self.netns, check=False)
        return [int(pid) for pid in found.stdout.split()]

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        """Runs `argv` on the host: in all its namespaces (network, PID,
        mount, UTS), as a process its init started would be."""
        import psutil

        (init,) = psutil.Process(self.proc.pid).children()
        return subprocess.run(
            ["nsenter", "--target", str(init.pid), "--net", "--pid", "--mount",
             "--uts", *argv],
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip

    def power_off(self) -> None:
        """Ends every process of the host at once (its `unshare` is killed:
        its child, the host's init, gets SIGKILL with it, and the kernel kills
        the rest of its PID namespace)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class Network:
    """Hosts named `names` (the first holds the bridge), made by `create`,
    removed with everything on them by `remove`."""

    def __init__(self, names: list[str]):
        pid = os.getpid()
        subnet = f"10.{(pid >> 8) & 0xFF}.{pid & 0xFF}"
        self.dir = Path(tempfile.mkdtemp(prefix="gh-"))  # short: Ray's sockets
        self.hosts = {
            name: Host(name, f"gpkg-{pid}-{name}", f"{subnet}.{i + 1}", self.dir / name)
            for i, name in enumerate(names)
        }

    @property
    def first(self) -> Host:
        return next(iter(self.hosts.values()))

    def create(self) -> None:
        """The namespaces, the bridge in the first, a veth from it to each
        other host, their addresses and links up."""
        _remove_stale_namespaces()
        bridge = self.first
        for host in self.hosts.values():
            _ip("netns", "add", host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
            for sub in ("home", "tmp"):
                (host.dir / sub).mkdir(parents=True)
        _ip("-n", bridge.netns, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge.netns, "addr", "add", f"{bridge.ip}/24", "dev", "br0")
        _ip("-n", bridge.netns, "link", "set", "br0", "up")
        for host in list(self.hosts.values())[1:]:
            port = f"v-{host.name}"[:15]
            # Both ends are made in their namespaces: no name in the machine's.
            _ip("link", "add", port, "netns", bridge.netns, "type", "veth",
                "peer", "name", "eth0", "netns", host.netns)  # fmt: skip
            _ip("-n", bridge.netns, "link", "set", port, "master", "br0", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")

    def boot(
        self,
        host: Host,
        commands: str,
        env: dict[str, str],
        hidden: list[Path] = (),
    ) -> None:
        """Boots `host`: runs the shell `commands` there (in its home, with
        `env`, `hidden` covered), then keeps it up until `power_off`, or until
        this thread ends (a test process killed leaves no host running).
        `wait_up` waits for the commands to have run."""
        script = "\n".join(
            [
                "set -e",
                f"hostname {shlex.quote(host.name)}",
                'for d in "$@"; do',
                '  mount -t tmpfs -o mode=0700 hidden "$d"',
                "done",
                'cd "$HOME"',
                commands,
                f"echo {UP}",
                "exec sleep infinity",
            ]
        )
        argv = [*host.exec_prefix(), "unshare", "--pid", "--fork", "--kill-child",
                "--mount-proc", "--uts", "sh", "-c", script, "sh",
                *map(str, hidden)]  # fmt: skip
        with open(host.log, "ab") as log:
            host.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )

    def wait_up(self, host: Host, timeout: float = 120) -> None:
        """Returns once `host`'s commands ran; switches it off and fails with
        its log if they did not."""
        deadline = time.monotonic() + timeout
        while UP not in host.log.read_text(errors="replace"):
            if host.proc.poll() is not None or time.monotonic() > deadline:
                host.power_off()
                raise RuntimeError(
                    f"host {host.name} did not come up:\n{host.log.read_text()}"
                )
            time.sleep(0.1)

    @staticmethod
    def namespaces() -> set[str]:
        """The names of the machine's network namespaces (`ip netns list`)."""
        listed = _ip("netns", "list", check=False).stdout.splitlines()
        return {line.split()[0] for line in listed if line.strip()}

    def left(self) -> dict[str, list[int]]:
        """Processes still in each host's namespace."""
        return {h.name: h.pids() for h in self.hosts.values() if h.pids()}

    def remove(self, timeout: float = 30) -> dict[str, list[int]]:
        """Switches every host off, then removes the namespaces (with their
        links) and the hosts' files. Returns the processes that were still in
        a namespace after `timeout` (then killed by pid): {} when none."""
        for host in self.hosts.values():
            host.power_off()
        deadline = time.monotonic() + timeout
        while self.left() and time.monotonic() < deadline:
            time.sleep(0.1)
        stragglers = self.left()
        for pids in stragglers.values():
            for pid in pids:
                _kill(pid)
        for host in self.hosts.values():
            _ip("netns", "del", host.netns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        return stragglers


def routes(host: Host) -> list[str]:
    """The host's IPv4 routes (`ip route`: its main table), one line each."""
    shown = _ip("-n", host.netns, "-4", "route", "show")
    return [line for line in shown.stdout.splitlines() if line.strip()]


def _remove_stale_namespaces() -> None:
    """Removes the namespaces a killed test session left (its hosts died with
    it, see `boot`): those named after a pid that is gone, with no process."""
    for name in Network.namespaces():
        ours = re.fullmatch(r"gpkg-(\d+)-\w+", name)
        if not ours or os.path.exists(f"/proc/{ours.group(1)}"):
            continue
        if not _ip("netns", "pids", name, check=False).stdout.split():
            _ip("netns", "del", name, check=False)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it ends
    (PR_SET_PDEATHSIG), which `unshare --kill-child` passes on to the host."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done
