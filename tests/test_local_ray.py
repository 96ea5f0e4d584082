"""The embedded Ray's setup choices (its full life is tested in test_tune.py)."""

from __future__ import annotations

import glob
import os
import tempfile

import pytest

from gpkg_ray.engine.local_ray import embedded_ray, ray_env
from gpkg_ray.errors import ClusterError


def test_loopback_only_and_token_auth_with_the_given_token(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    env = ray_env("s3cret")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"] == "s3cret"


def test_a_users_auth_mode_stands(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = ray_env("s3cret")
    assert "RAY_AUTH_MODE" not in env and "RAY_AUTH_TOKEN" not in env


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
