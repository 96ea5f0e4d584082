"""A Guild batch's trials on a cluster's nodes (`-o gpkg.ray/tpe -Fo cluster=NAME`).

A trial run of a batch is made from the batch run's proto (`.guild/proto`),
as Guild's `batch_util.init_trial_run` makes it: the proto copied (its
attrs and the source code Guild copied into it), the trial's flags, and a
link from the batch run. On a node the batch run is not there: the proto is
packed once on the driver, put in Ray's object store, and unpacked once per
node into the tune's Guild home there as a stub batch run (its `.guild/proto`
only), outside the home's runs, which the trials there make their runs from.
The link from the batch run at home is made by the collector when a trial's
run first comes home (`link_trial`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any

STUBS = "batches"
"""In a node's Guild home of the tune: the stub batch runs."""


@dataclass(frozen=True)
class BatchProto:
    """The batch run's proto, packed once on the driver (see `pack_proto`)."""

    batch_id: str
    packed: Any
    """Ray ObjectRef of `pack_proto`'s bytes."""


def pack_proto(batch_dir: str) -> bytes:
    """The batch run's `.guild/proto` as a tar, under `.guild/proto`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(os.path.join(batch_dir, ".guild", "proto"), ".guild/proto")
    return buf.getvalue()


def install_proto(home: str, proto: BatchProto) -> str:
    """On a node: the stub batch run in the tune's Guild home `home` (made by
    the first trial there; trials on one node may do this at once: each
    unpacks aside, then renames, and the first wins). Returns its directory."""
    stubs = os.path.join(home, STUBS)
    stub = os.path.join(stubs, proto.batch_id)
    if os.path.isdir(stub):
        return stub
    import ray

    data = ray.get(proto.packed)
    os.makedirs(stubs, exist_ok=True)
    aside = tempfile.mkdtemp(prefix=".proto-", dir=stubs)
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(aside, filter="tar")
        with contextlib.suppress(OSError):  # another trial was first
            os.rename(aside, stub)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    return stub


def remove_protos(home: str) -> None:
    """On a node, at the end of the tune: the stub batch runs."""
    shutil.rmtree(os.path.join(home, STUBS), ignore_errors=True)


def link_trial(batch_dir: str, runs_dir: str, run_id: str) -> None:
    """The link from the batch run to its trial run `run_id` of `runs_dir`,
    as Guild's batch_util makes it (relative, named by the run id)."""
    link = os.path.join(batch_dir, run_id)
    target = os.path.relpath(os.path.join(runs_dir, run_id), batch_dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(target, link)
