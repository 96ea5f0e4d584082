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

from gpkg_ray.errors import ClusterError
from gpkg_ray.processes import descendants, stop_processes

# Smallest object store Ray accepts is 75 MB; trials pass only small configs.
OBJECT_STORE_BYTES = 128 * 1024 * 1024


def ray_env(auth_token: str) -> dict[str, str]:
    """Environment for a private, loopback-only Ray and the processes it starts."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AIR_NEW_OUTPUT": "0",
        # A trial reports scalars before its objective exists (e.g. while `train`
        # runs, before `evaluate`): that is not an error.
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
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
    saved_env = _apply_env(ray_env(secrets.token_hex(32)))
    log_handler = _route_ray_logs(log_file)
    me = psutil.Process()
    try:
        import ray

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
            reason = (
                str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            )
            raise ClusterError(f"cannot start an embedded Ray: {reason}") from e
        yield
    finally:
        started = descendants(me)
        try:
            ray.shutdown()
        finally:
            stop_processes(started, wait_first=True)
            _unroute_ray_logs(log_handler)
            _restore_env(saved_env)
            shutil.rmtree(temp_dir, ignore_errors=True)


def _check_ray_not_imported_for_clusters() -> None:
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and constants.ENABLE_RAY_CLUSTER:
        raise ClusterError(
            "Ray was imported before the embedded Ray was set up, so it would "
            "listen on every interface: enter embedded_ray() before importing ray"
        )


def _apply_env(env: dict[str, str]) -> dict[str, str | None]:
    saved = {name: os.environ.get(name) for name in (*env, "RAY_ADDRESS")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.update(env)
    _reload_ray_config()
    return saved


def _restore_env(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _reload_ray_config()


def _reload_ray_config() -> None:
    # Ray reads RAY_AUTH_MODE once, at import; Ray itself reloads its config this
    # way after changing it (authentication_token_setup._enable_token_auth).
    from ray._raylet import Config

    Config.initialize("")


def _route_ray_logs(log_file: str | None) -> logging.Handler:
    handler = logging.FileHandler(log_file) if log_file else logging.NullHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    for name in ("ray", "optuna"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return handler


def _unroute_ray_logs(handler: logging.Handler) -> None:
    for name in ("ray", "optuna"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()
