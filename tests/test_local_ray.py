"""The embedded Ray's setup choices (its full life is tested in test_tune.py)."""

from __future__ import annotations

import glob
import os
import tempfile

import pytest

from gpkg_ray.cluster import check_cluster
from gpkg_ray.engine.local_ray import embedded_ray, ray_env
from gpkg_ray.errors import ClusterError

LOCAL_AUTH_VAR = "GPKG_RAY_LOCAL_AUTH"
"""The documented setting that turns the embedded Ray's token auth off."""


@pytest.fixture(autouse=True)
def no_auth_settings(monkeypatch):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", LOCAL_AUTH_VAR):
        monkeypatch.delenv(name, raising=False)


def test_loopback_only_and_token_auth_with_the_given_token():
    env = ray_env("s3cret")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"] == "s3cret"


def test_a_users_token_mode_gets_this_rays_own_token(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the users cluster token")
    env = ray_env("s3cret")
    assert (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]) == ("token", "s3cret")


@pytest.mark.parametrize("mode", ["disabled", "k8s", ""])
def test_a_users_auth_mode_other_than_token_is_refused(monkeypatch, mode):
    """`RAY_AUTH_MODE=disabled` in the user's environment turned the embedded
    Ray's token off: any user of the machine could run code as this one
    through its loopback ports (issue 18)."""
    monkeypatch.setenv("RAY_AUTH_MODE", mode)

    for check in (lambda: ray_env("s3cret"), lambda: check_cluster(None, 1, 0)):
        with pytest.raises(ClusterError) as e:
            check()
        assert str(e.value) == (
            f"RAY_AUTH_MODE={mode} would turn off the embedded Ray's token auth "
            "(any user of this machine could then run code as you through its "
            "ports): unset RAY_AUTH_MODE, or set GPKG_RAY_LOCAL_AUTH=disabled to "
            "run it without a token"
        )


def test_the_documented_setting_turns_token_auth_off(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv(LOCAL_AUTH_VAR, "disabled")
    env = ray_env("s3cret")
    assert env["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN" not in env
    check_cluster(None, 1, 0)

    monkeypatch.setenv(LOCAL_AUTH_VAR, "off")
    with pytest.raises(ClusterError, match="GPKG_RAY_LOCAL_AUTH=off is not a setting"):
        ray_env("s3cret")


def test_refuses_to_start_if_ray_was_imported_to_listen_everywhere(
    monkeypatch, tmp_path
):
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    # A temp dir of the test's own: other processes' gpkg-ray-* dirs come and
    # go in /tmp meanwhile.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    environ_before = dict(os.environ)
    temp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "gpkg-ray-*")))

    with (
        pytest.raises(ClusterError, match="would listen on every interface"),
        embedded_ray(),
    ):
        pass

    assert dict(os.environ) == environ_before
    assert (
        set(glob.glob(os.path.join(tempfile.gettempdir(), "gpkg-ray-*"))) == temp_before
    )
