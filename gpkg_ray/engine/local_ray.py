"""An embedded, private Ray instance for `cluster=local`.

- Private: `address="local"` never joins another cluster found on the machine.
- Loopback only: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes every listener bind to
  127.0.0.1 (otherwise Ray on Linux listens on all interfaces).
- Token auth on, with a fresh token for this instance passed in the environment,
  so nothing is written to ~/.ray (Ray would otherwise save ~/.ray/auth_token).
  Its ports are on loopback, but any user of the machine can reach those: a
  `RAY_AUTH_MODE` in the user's environment is not inherited, and one other
  than `token` is refused; only LOCAL_AUTH_VAR=disabled turns the token off.
- No dashboard, no usage stats; Ray's logs go to a file, not the run output.
- Lean: only the processes a tune uses. Ray's defaults would also start the
  dashboard's API server (its job and state APIs, which ray.init waits ~1.5 s
  for even with include_dashboard=False), the autoscaler's monitor (a single
  local node has nothing to scale), the log monitor (it streams workers' logs
  to the driver, and log_to_driver is off) and one idle worker per CPU, and
  its dashboard agent would serve HTTP and sample the node's processes. That
  was ~3.5 CPU-seconds of a tune's ~5 on Ray's side, and 1.5 s before the
  first trial. It takes Ray's private API (see lean_node): the fast test
  tests/test_local_ray.py::test_the_private_ray_names_lean_start_uses fails
  as soon as Ray changes it, and the e2e test beside it checks the set of
  processes Ray starts.
- Stopped by pid: `ray.shutdown()` first, then any process this instance started
  that is still alive is terminated, then killed (gcs_server can ignore SIGTERM).
  Never a machine-wide `ray stop`.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

from gpkg_ray import faults
from gpkg_ray.environ import RAY_TEMP_PREFIX, patched_environ
from gpkg_ray.errors import ClusterError
from gpkg_ray.processes import descendants, stop_processes

# Smallest object store Ray accepts is 75 MB; trials pass only small configs.
OBJECT_STORE_BYTES = 128 * 1024 * 1024


LOCAL_AUTH_VAR = "GPKG_RAY_LOCAL_AUTH"
"""The documented setting (docs/guide.md, Embedded Ray) that turns the
embedded Ray's token auth off: `disabled`; `token`, the default, keeps it."""
TOKEN, DISABLED = "token", "disabled"


def local_auth_mode() -> str:
    """The embedded Ray's auth mode, `token` unless LOCAL_AUTH_VAR asks for
    `disabled`. Raises ClusterError for a RAY_AUTH_MODE in the environment
    other than `token` that LOCAL_AUTH_VAR does not ask for: Ray would take it,
    and any user of this machine could then run code as this one through the
    embedded Ray's loopback ports."""
    setting = os.environ.get(LOCAL_AUTH_VAR, TOKEN).strip().lower() or TOKEN
    if setting not in (TOKEN, DISABLED):
        raise ClusterError(
            f"{LOCAL_AUTH_VAR}={os.environ[LOCAL_AUTH_VAR]} is not a setting of "
            f"the embedded Ray's auth: use {TOKEN} (the default) or {DISABLED}"
        )
    users = os.environ.get("RAY_AUTH_MODE")
    if setting == TOKEN and users is not None and users.strip().lower() != TOKEN:
        raise ClusterError(
            f"RAY_AUTH_MODE={users} would turn off the embedded Ray's token auth "
            "(any user of this machine could then run code as you through its "
            f"ports): unset RAY_AUTH_MODE, or set {LOCAL_AUTH_VAR}={DISABLED} to "
            "run it without a token"
        )
    return setting


def ray_env(auth_token: str) -> dict[str, str]:
    """Environment for a private, loopback-only Ray and the processes it
    starts: token auth with `auth_token`, unless local_auth_mode() says
    otherwise (raises ClusterError as it does)."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    if local_auth_mode() == DISABLED:
        env["RAY_AUTH_MODE"] = DISABLED
    else:
        env["RAY_AUTH_MODE"] = TOKEN
        env["RAY_AUTH_TOKEN"] = auth_token
    return env


@dataclass
class LocalRay:
    """A running embedded Ray: where it keeps its files, what it started."""

    temp_dir: str
    processes: list[psutil.Process] = field(default_factory=list)
    """Ray's own processes (GCS, raylet, agents, first workers)."""


@contextmanager
def embedded_ray(
    log_file: str | None = None,
    preload: Sequence[str] = (),
    announce: Callable[[str], None] | None = None,
) -> Iterator[LocalRay]:
    """Starts a private local Ray; stops it and all its processes on exit.

    Enter it before anything imports Ray: Ray decides at import whether it may
    listen beyond loopback. `preload` names modules to import while Ray starts
    (Ray's start mostly waits on its processes; Tune's import takes 1.5 s).
    `announce(temp_dir)` is called before that dir is made (see new_temp_dir).
    """
    check_ray_not_imported()
    temp_dir = new_temp_dir(announce)
    try:
        # No RAY_ADDRESS: nothing in this process should find another cluster.
        # No token of the user's either: this Ray's own, in RAY_AUTH_TOKEN.
        unset = ["RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"]
        with patched_environ(ray_env(secrets.token_hex(32)), unset=unset):
            reload_ray_config()
            _import_in_background(preload)
            with ray_logs_to(log_file) as route_logs:
                yield from _run_ray(temp_dir, route_logs)
    finally:
        try:
            # Not a Ray whose import a stop interrupted: imported again, it fails.
            if "ray" in sys.modules:
                reload_ray_config()  # the environment is restored: let Ray see it
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def new_temp_dir(announce: Callable[[str], None] | None = None) -> str:
    """Makes the embedded Ray's temp dir (private, in the system's temp dir),
    calling `announce(path)` first: the journal records the path before the
    dir exists, so a kill at any moment of Ray's start (which fills the dir)
    leaves no dir a restart does not know of."""
    while True:
        path = os.path.join(
            tempfile.gettempdir(), RAY_TEMP_PREFIX + secrets.token_hex(4)
        )
        if os.path.lexists(path):
            continue
        if announce is not None:
            announce(path)
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:  # taken since: announced for nothing
            continue


def _run_ray(temp_dir: str, route_logs) -> Iterator[LocalRay]:
    """ray.init, yield, then ray.shutdown and stop what it left, by pid."""
    me = psutil.Process()
    try:
        import ray  # after the env is set: Ray reads part of its setup at import

        try:
            with lean_node():
                ray.init(
                    address="local",
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    object_store_memory=OBJECT_STORE_BYTES,
                    _temp_dir=temp_dir,
                    _system_config=LEAN_SYSTEM_CONFIG,
                )
        except Exception as e:
            lines = str(e).strip().splitlines()
            reason = lines[0] if lines else type(e).__name__
            raise ClusterError(f"cannot start an embedded Ray: {reason}") from e
        route_logs()  # ray.init drops the handlers of Ray's logger
        faults.point("ray-starting")  # up, not yet in the journal
        yield LocalRay(temp_dir, descendants(me))
    finally:
        started = descendants(me)
        try:
            if "ray" in sys.modules:
                sys.modules["ray"].shutdown()
        finally:
            stop_processes(started, wait_first=True)


LEAN_SYSTEM_CONFIG = {"prestart_worker_first_driver": False}
"""Ray's config (RayConfig keys; the GCS refuses an unknown one): no idle
workers started for the first driver, one per CPU, each ~0.5 CPU-second of
Python and Ray's import that a tune may never use; Ray starts a trial's
actor's worker when Tune asks for it."""


@contextmanager
def lean_node() -> Iterator[None]:
    """While it is entered, `ray.init` starts a head node without the
    dashboard's API server, the autoscaler's monitor and the log monitor, and
    with a minimal dashboard agent.

    ray.init builds its head as `ray._private.node.Node(ray_params=...)`, with
    no argument that leaves those out: this swaps in a subclass that does, and
    keeps everything else of ray.init (auth, the driver's connection, its
    shutdown of the node). Import Ray only after the environment is set.
    """
    from ray._private import node as ray_node
    from ray._private import utils as ray_utils

    ray_node_class = ray_node.Node

    class LeanNode(ray_node_class):
        def __init__(self, ray_params, *args, **kwargs):
            if kwargs.get("head"):
                ray_params.no_monitor = True
                ray_params.include_log_monitor = False
            super().__init__(ray_params, *args, **kwargs)

        def start_api_server(self, *, include_dashboard, raise_on_failure):
            """Not started: nothing of a tune uses it (ray.init without a
            dashboard would still start it for its job and state APIs)."""

        def start_raylet(self, *args, **kwargs):
            """The raylet, whose dashboard agent is started `--minimal`, as
            where Ray's dashboard packages are missing: without the HTTP
            server, metrics and the reporter that samples every process of
            the node every few seconds, none of which a tune uses."""
            check = ray_utils.get_dashboard_dependency_error
            ray_utils.get_dashboard_dependency_error = _minimal_agent
            try:
                return super().start_raylet(*args, **kwargs)
            finally:
                ray_utils.get_dashboard_dependency_error = check

    ray_node.Node = LeanNode
    try:
        yield
    finally:
        ray_node.Node = ray_node_class


def _minimal_agent() -> str:
    return "gpkg.ray: the embedded Ray's dashboard agent runs --minimal"


def _import_in_background(modules: Sequence[str]) -> None:
    """Imports `modules` in a daemon thread. An import error is left to the
    main thread, which imports the module again where it uses it."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:
                return

    threading.Thread(target=run, name="gpkg-ray-preload", daemon=True).start()


def check_ray_not_imported() -> None:
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and constants.ENABLE_RAY_CLUSTER:
        raise ClusterError(
            "Ray was imported before the embedded Ray was set up, so it would "
            "listen on every interface: enter embedded_ray() before importing ray"
        )


def reload_ray_config() -> None:
    # Ray reads RAY_AUTH_MODE once, at import; Ray itself reloads its config this
    # way after changing it (authentication_token_setup._enable_token_auth).
    from ray._raylet import Config

    Config.initialize("")


@contextmanager
def ray_logs_to(log_file: str | None) -> Iterator[Callable[[], None]]:
    """Ray's (and Optuna's) Python logs go to `log_file`, not the console.

    Yields a function that routes them there (again): `ray.init` removes the
    handlers of Ray's logger, which then logs warnings to stderr through
    Python's last-resort handler (Ray logs a trial's traceback each time a
    trial fails, and a `Tuner.restore` hint on a stop: the tune's own output
    says what matters in one line). Ray's own handlers are restored on exit.
    """
    handler = logging.FileHandler(log_file) if log_file else logging.NullHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    names = ("ray", "optuna")
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.level, logger.propagate)

    def route() -> None:
        for name in names:
            logger = logging.getLogger(name)
            logger.handlers = [handler]
            logger.setLevel(logging.INFO)
            logger.propagate = False
        _cluster_errors_to_log()

    route()
    try:
        yield route
    finally:
        _cluster_errors_to_console()
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        handler.close()


def _cluster_errors_to_log() -> None:
    """The cluster's error messages (a raylet that died, with 20 lines of its
    log) go to Ray's log, not the console.

    A driver prints them to stdout from a thread of its own, even with
    `log_to_driver=False`, through `ray._private.worker.print_to_stdstream`;
    the tune's output says in one line what they mean for a trial.
    """
    worker = sys.modules.get("ray._private.worker")
    if worker is not None and not hasattr(worker, "_gpkg_ray_print"):
        worker._gpkg_ray_print = worker.print_to_stdstream
        worker.print_to_stdstream = _log_cluster_error


def _cluster_errors_to_console() -> None:
    worker = sys.modules.get("ray._private.worker")
    if worker is not None and hasattr(worker, "_gpkg_ray_print"):
        worker.print_to_stdstream = worker._gpkg_ray_print
        del worker._gpkg_ray_print


def _log_cluster_error(data: dict, ignore_prefix: bool = False) -> None:
    logger = logging.getLogger("ray")
    for line in data.get("lines", []):
        logger.warning("(%s) %s", data.get("pid", "ray"), line)
