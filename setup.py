"""Build script for gpkg.ray.

Guild finds the package definition of `gpkg.ray` at `gpkg/ray/guild.yml` inside
the installed distribution. The build step below writes it there from the
repo-root `guild.yml`, with the `tune` op's flags made from their single
definition, the Settings fields in `gpkg_ray/tuning_spec/settings.py`; so `pip
install .` and wheels both carry it.
"""

import importlib.util
import os
import sys

import yaml
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
GUILDFILE = os.path.join(HERE, "guild.yml")
OPTIMIZER_MAIN = "gpkg_ray.optimizer"
"""Main of the optimizer ops (gpkg.ray/random, grid, tpe): their flags are
the tune op's, less those Guild's batch options stand for."""


def _package_def():
    with open(GUILDFILE) as f:
        for item in yaml.safe_load(f):
            if "package" in item:
                return item
    raise SystemExit("guild.yml has no 'package' definition")


def _tune_flagdefs(batch: bool = False) -> dict:
    """The tune op's flags (`batch`: the optimizer ops'), from the Settings
    module alone (the rest of the package imports Guild, which the build does
    not have)."""
    sys.path.insert(0, HERE)
    try:
        path = os.path.join(HERE, "gpkg_ray", "tuning_spec", "settings.py")
        spec = importlib.util.spec_from_file_location("_gpkg_ray_settings", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module.guild_flagdefs(batch)
    finally:
        sys.modules.pop("_gpkg_ray_settings", None)
        sys.path.remove(HERE)


def installed_guildfile() -> list:
    """guild.yml as installed: the repo's, with the tune op's flags."""
    with open(GUILDFILE) as f:
        items = yaml.safe_load(f)
    (config,) = [item for item in items if item.get("config") == "tune"]
    config["operations"]["tune"]["flags"] = _tune_flagdefs()
    (model,) = [item for item in items if item.get("model") == ""]
    for opdef in model.get("operations", {}).values():
        if opdef.get("main") == OPTIMIZER_MAIN:
            opdef["flags"] = _tune_flagdefs(batch=True)
    return items


class BuildWithGuildfile(build_py):
    """Installs guild.yml where Guild looks for package `gpkg.ray`."""

    def run(self):
        super().run()
        target_dir = os.path.join(self.build_lib, "gpkg", "ray")
        os.makedirs(target_dir, exist_ok=True)
        with open(os.path.join(target_dir, "guild.yml"), "w") as f:
            f.write(_INSTALLED_HEADER)
            yaml.safe_dump(installed_guildfile(), f, sort_keys=False, width=88)


_INSTALLED_HEADER = """\
# gpkg.ray's package definition, written by its setup.py from the repo's
# guild.yml and the tune op's flags in gpkg_ray/tuning_spec/settings.py.
"""


def _readme():
    with open(os.path.join(HERE, "README.md")) as f:
        return f.read()


PKG = _package_def()

setup(
    name=PKG["package"],
    version=str(PKG["version"]),
    description=PKG["description"].strip(),
    long_description=_readme(),
    long_description_content_type="text/markdown",
    url="https://github.com/gpkg/gpkg.ray",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["gpkg_ray", "gpkg_ray.*"]),
    install_requires=PKG["requires"],
    cmdclass={"build_py": BuildWithGuildfile},
    entry_points={
        # Model '' of the package's guild.yml (its `- model: ''`): without that
        # model Guild printed "undefined model ''" at every listing.
        "guild.models": ["__anonymous__ = guild.model:PackageModel"],
        "guild.plugins": ["gpkg-ray = gpkg_ray.plugin:TunePlugin"],
        "guild.remotetypes": [
            "ray-cluster = gpkg_ray.remote.guild_remote:RayClusterRemoteType",
            "remotes-cluster = "
            "gpkg_ray.remote.remotes_cluster_remote:RemotesClusterRemoteType",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
