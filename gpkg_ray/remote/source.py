"""The project source a cluster's nodes need to run a tune's steps.

Staged by Guild's own sourcecode rules: for each step's op, the files Guild would
copy into that op's run (its `sourcecode` config, else the project's git files or
Guild's defaults), plus the Guild file itself. The staged directory becomes the
working dir of the job on the cluster (Ray's runtime_env), so each node gets the
same project files and `guild run STEP` works there as it does here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

from gpkg_ray import guild_api
from gpkg_ray.errors import ClusterError

MAX_SOURCE_MB = 100
"""Ray uploads the working dir through its GCS; it refuses more than 512 MiB,
and every node downloads it: sourcecode bigger than this is a config mistake."""


def stage_source(step_opdefs: Iterable, dest: str) -> None:
    """Copies the steps' source code, as Guild selects it, into `dest`, laid out
    as in the project (Guild file at the root); raises ClusterError when it is
    more than the nodes should be sent."""
    for opdef in step_opdefs:
        project_dir = opdef.guildfile.dir
        root = guild_api.sourcecode_root(opdef)
        rel_root = os.path.relpath(root, project_dir)
        if rel_root == os.pardir or rel_root.startswith(os.pardir + os.sep):
            raise ClusterError(
                f"op '{opdef.name}': its sourcecode root {root} is outside the "
                f"project {project_dir}, so it cannot be sent to the cluster's nodes"
            )
        guild_api.copy_sourcecode(
            opdef, root, os.path.normpath(os.path.join(dest, rel_root))
        )
        shutil.copy2(
            opdef.guildfile.src,
            os.path.join(dest, os.path.basename(opdef.guildfile.src)),
        )
    size = _tree_size(dest)
    if size > MAX_SOURCE_MB * 1024 * 1024:
        raise ClusterError(
            f"the steps' source code is {size / 2**20:.0f} MB, over "
            f"{MAX_SOURCE_MB} MB: set `sourcecode` on the step ops so that data "
            "and outputs are not sent to every node"
        )


def _tree_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
