"""An embedded, private Ray instance for `cluster=local`.

- Private: `address="local"` never joins another cluster found on the machine.
- Loopback only: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes every listener bind to
  127.0.0.1 (otherwise Ray on Linux listens on all interfaces).
- Token auth on, with a fresh token for this instance passed in the environment,
  so nothing is written to ~/.ray (Ray would otherwise save ~/.ray/auth_token).
- No dashboard, no usage stats; Ray's logs go to a file, not the run output.
- Stopped by pid: `ray.shutdown()` first, then any process this instance started
  that is still alive is terminated, then killed (gcs_server can ignore SIGTERM).
  Never a machine-wide `ray stop`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from gpkg_ray.environ import patched_environ
from gpkg_ray.errors import ClusterError
from gpkg_ray.processes import descendants, stop_processes

# Smallest object store Ray accepts is 75 MB; trials pass only small configs.
OBJECT_STORE_BYTES = 128 * 1024 * 1024


def ray_env(auth_token: str) -> dict[str, str]:
    """Environment for a private, loopback-only Ray and the processes it starts."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    if "RAY_AUTH_MODE" not in os.environ:  # a user's explicit choice stands
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = auth_token
    return env


@contextmanager
def embedded_ray(
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    log_file: str | None = None,
) -> Iterator[None]:
    """Starts a private local Ray; stops it and all its processes on exit.

    Enter it before anything imports Ray: Ray decides at import whether it may
    listen beyond loopback.
    """
    _check_ray_not_imported_for_clusters()
    temp_dir = tempfile.mkdtemp(prefix="gpkg-ray-")  # short: Ray puts sockets here
    try:
        # No RAY_ADDRESS: nothing in this process should find another cluster.
        with patched_environ(ray_env(secrets.token_hex(32)), unset=["RAY_ADDRESS"]):
            _reload_ray_config()
            with _ray_logs_to(log_file):
                yield from _run_ray(temp_dir, num_cpus, num_gpus)
    finally:
        _reload_ray_config()  # the environment is restored: let Ray see it
        shutil.rmtree(temp_dir, ignore_errors=True)


def _run_ray(temp_dir: str, num_cpus, num_gpus) -> Iterator[None]:
    """ray.init, yield, then ray.shutdown and stop what it left, by pid."""
    me = psutil.Process()
    try:
        import ray  # after the env is set: Ray reads part of its setup at import

        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                object_store_memory=OBJECT_STORE_BYTES,
                _temp_dir=temp_dir,
            )
        except Exception as e:
            lines = str(e).strip().splitlines()
            reason = lines[0] if lines else type(e).__name__
            raise ClusterError(f"cannot start an embedded Ray: {reason}") from e
        yield
    finally:
        started = descendants(me)
        try:
            if "ray" in sys.modules:
                sys.modules["ray"].shutdown()
        finally:
            stop_processes(started, wait_first=True)


def _check_ray_not_imported_for_clusters() -> None:
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and constants.ENABLE_RAY_CLUSTER:
        raise ClusterError(
            "Ray was imported before the embedded Ray was set up, so it would "
            "listen on every interface: enter embedded_ray() before importing ray"
        )


def _reload_ray_config() -> None:
    # Ray reads RAY_AUTH_MODE once, at import; Ray itself reloads its config this
    # way after changing it (authentication_token_setup._enable_token_auth).
    from ray._raylet import Config

    Config.initialize("")


@contextmanager
def _ray_logs_to(log_file: str | None) -> Iterator[None]:
    """Ray's (and Optuna's) Python logs go to `log_file`, not the console."""
    handler = logging.FileHandler(log_file) if log_file else logging.NullHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    for name in ("ray", "optuna"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield
    finally:
        for name in ("ray", "optuna"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()
