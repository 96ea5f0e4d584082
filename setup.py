"""Build script for gpkg.ray.

Guild finds the package definition of `gpkg.ray` at `gpkg/ray/guild.yml` inside
the installed distribution. The repo-root `guild.yml` is the single source: the
build step below copies it there, so `pip install .` and wheels both carry it.
"""

import os
import shutil

import yaml
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
GUILDFILE = os.path.join(HERE, "guild.yml")


def _package_def():
    with open(GUILDFILE) as f:
        for item in yaml.safe_load(f):
            if "package" in item:
                return item
    raise SystemExit("guild.yml has no 'package' definition")


class BuildWithGuildfile(build_py):
    """Installs guild.yml where Guild looks for package `gpkg.ray`."""

    def run(self):
        super().run()
        target_dir = os.path.join(self.build_lib, "gpkg", "ray")
        os.makedirs(target_dir, exist_ok=True)
        shutil.copyfile(GUILDFILE, os.path.join(target_dir, "guild.yml"))


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
        "guild.models": ["__anonymous__ = guild.model:PackageModel"],
        "guild.plugins": ["gpkg-ray = gpkg_ray.plugin:TunePlugin"],
        "guild.remotetypes": [
            "ray-cluster = gpkg_ray.remote.guild_remote:RayClusterRemoteType"
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
