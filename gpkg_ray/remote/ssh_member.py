"""A member of a `remotes-cluster`: a Guild `ssh` remote, reached with its
own Guild settings, and the commands gpkg.ray runs there.

Guild's ssh remote keys are read as Guild reads them (guild/remotes/ssh.py):
`host`, `user`, `port`, `private-key`, `connect-timeout`, `proxy`, and the
Python environment: `venv-activate`, else `conda-env`, else `venv-path` (or
`guild-env`). The command runs through the member's login shell after the
environment's activation, as Guild's own remote commands do; what it needs
to read (a token, say) goes on its stdin, never on its command line.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpkg_ray.errors import ClusterError

SSH_TYPE = "ssh"
DEFAULT_CONNECT_TIMEOUT = 10  # Guild's (ssh_util.DEFAULT_CONNECT_TIMEOUT)
UNREACHABLE = 255
"""ssh's exit status when it could not connect (or log in)."""


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    user: str | None = None
    port: int | None = None
    private_key: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    proxy: str | None = None
    activate: tuple[str, ...] = ()
    """Shell lines that activate the member's Python environment."""

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_argv(self, command: str) -> list[str]:
        """`ssh` running `command` on the member, with Guild's options plus
        BatchMode (a key, never a password prompt that would hang)."""
        argv = ["ssh", "-oStrictHostKeyChecking=no", "-oBatchMode=yes"]
        if self.private_key:
            argv += ["-i", self.private_key]
        argv.append(f"-oConnectTimeout={self.connect_timeout:g}")
        if self.port:
            argv += ["-p", str(self.port)]
        if self.proxy:
            argv.append(f"-oProxyCommand={self.proxy}")
        return [*argv, self.target, command]

    def shell_command(self, argv: list[str]) -> str:
        """`argv` after the member's environment is activated."""
        lines = ["set -e", *self.activate, " ".join(shlex.quote(a) for a in argv)]
        return "; ".join(lines)

    def run(
        self, argv: list[str], stdin: str = "", timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Runs `argv` (after the activation) on the member, `stdin` fed to
        it; raises ClusterError when ssh cannot reach the member."""
        ssh = self.ssh_argv(self.shell_command(argv))
        try:
            done = subprocess.run(
                ssh, input=stdin, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise ClusterError(
                f"member '{self.name}' ({self.target}) did not answer in {timeout:g} s"
            ) from e
        except FileNotFoundError as e:
            raise ClusterError("`ssh` is not installed here: install OpenSSH") from e
        if done.returncode == UNREACHABLE:
            raise ClusterError(
                f"cannot reach member '{self.name}' ({self.target}) over ssh: "
                f"{last_line(done.stderr)}"
            )
        return done


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def member_for_config(cluster: str, name: str, raw: Any) -> Member:
    """Member `name` of cluster `cluster`, from its Guild remote config `raw`
    (None when no remote has that name); raises ClusterError when it is not
    a usable ssh remote."""
    if raw is None:
        raise ClusterError(
            f"remote '{cluster}': member '{name}' is not a remote in your Guild "
            f"config: define it as `{name}: {{type: ssh, host: ...}}` under remotes"
        )
    if not isinstance(raw, Mapping) or raw.get("type") != SSH_TYPE:
        kind = raw.get("type") if isinstance(raw, Mapping) else raw
        raise ClusterError(
            f"remote '{cluster}': member '{name}' is of type '{kind}', not ssh: "
            "a remotes-cluster joins Guild ssh remotes"
        )
    host = raw.get("host")
    if not host or not isinstance(host, str):
        raise ClusterError(f"remote '{name}' has no host: give `host: NAME_OR_IP`")
    return Member(
        name=name,
        host=host,
        user=_str(raw.get("user")),
        port=_port(name, raw.get("port")),
        private_key=_private_key(raw.get("private-key")),
        connect_timeout=_timeout(name, raw.get("connect-timeout")),
        proxy=_str(raw.get("proxy")),
        activate=activation_lines(raw),
    )


def activation_lines(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """Guild's order (SSHRemote._env_activate_cmd_lines): venv-activate,
    conda-env, venv-path (or guild-env)."""
    if raw.get("venv-activate"):
        return (str(raw["venv-activate"]),)
    conda = raw.get("conda-env")
    if conda:
        return (
            f"source {conda}/etc/profile.d/conda.sh > /dev/null 2>&1 || "
            f"source {conda}/../../etc/profile.d/conda.sh > /dev/null 2>&1",
            f"conda activate '{conda}'",
        )
    venv = raw.get("venv-path") or raw.get("guild-env")
    if venv:
        return (f"source {venv}/bin/activate",)
    return ()


def _str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _port(name: str, value: Any) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not str(value).isdigit():
        raise ClusterError(f"remote '{name}': port must be a number, not '{value}'")
    return int(value)


def _timeout(name: str, value: Any) -> float:
    if value in (None, ""):
        return DEFAULT_CONNECT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ClusterError(
            f"remote '{name}': connect-timeout must be seconds > 0, not '{value}'"
        )
    return float(value)


def _private_key(value: Any) -> str | None:
    """As Guild's `remote_util.config_path`: `~` and variables expanded, a
    relative path taken from the Guild config's directory."""
    if value in (None, ""):
        return None
    from gpkg_ray import guild_api

    return guild_api.remote_config_path(str(value))
