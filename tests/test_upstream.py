"""Runs from outside a trial that its steps require (gpkg_ray.upstream), and
runs from a node written home as runs of the project, in process: the tune's
check before any run (Guild's rule over a Guild home of hand-made runs), the
packing for the nodes, and the collector's rewrite of Guild's files of a run.
The cluster end to end: tests/test_cluster_remote.py (upstream_tune)."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml
from conftest import closed_address, write_guild_config
from projects import tune_check_error

from gpkg_ray import upstream
from gpkg_ray.remote.run_sync import NodeInfo, RunCollector, RunSender

GUILD_YML = """
- model: ''
  extends: gpkg.ray/tune
  operations:
    prepare:
      main: prepare
    train:
      main: train
      flags:
        lr: 0.01
      requires:
        - operation: prepare
    evaluate:
      main: evaluate
      requires:
        - operation: train
    tune:
      config:
        steps: [train, evaluate]
        optimize:
          - max: acc_val
        space:
          lr: [0.01, 0.02]
{extra}
"""


def _write(project, extra: str = "") -> None:
    extra = "\n".join(" " * 10 + line for line in extra.splitlines())
    project.write("guild.yml", GUILD_YML.replace("{extra}", extra))
    from guild import guildfile

    guildfile._cache.clear()  # Guild reads a Guild file once per process
    for name in ("prepare.py", "train.py", "evaluate.py"):
        project.write(name, "pass\n")


def _guild_run(
    project, op: str, started: int, marked: bool = False, prefix: str = "", **files
) -> str:
    """A completed run of `op` of the project, as Guild leaves one; its id
    starts with `prefix`."""
    run_id = prefix + os.urandom(16).hex()[len(prefix) :]
    run = project.guild_home / "runs" / run_id
    (run / ".guild" / "attrs").mkdir(parents=True)
    guildfile = project.path / "guild.yml"
    (run / ".guild" / "opref").write_text(f"guildfile:{guildfile} abc '' {op}")
    attrs = {"id": run_id, "started": started, "exit_status": 0, "flags": {}}
    if marked:
        attrs["marked"] = True
    for name, value in attrs.items():
        (run / ".guild" / "attrs" / name).write_text(yaml.safe_dump(value))
    for name, size in files.items():
        with open(run / name, "wb") as f:
            f.truncate(size)  # sparse: the size without the disk
    return run_id


def _checked(project, *flags: str):
    """The tune's check as the plugin makes it (see projects.tune_check_error)."""
    from guild import config, op_util

    from gpkg_ray.preparation import check_tune

    with (
        mock.patch.dict(os.environ, project.env, clear=True),
        config.SetCwd(str(project.path)),
        config.SetGuildHome(str(project.guild_home)),
    ):
        opdef = op_util.opdef_for_opspec("tune")
        user_flags, _ = op_util.parse_flag_assigns(list(flags), opdef)
        flag_vals = op_util.flag_vals_for_opdef(opdef, user_flags, False)
        return check_tune(
            opdef, flag_vals, user_flags, opdef.opref, str(project.guild_home)
        )


def test_a_required_run_is_guilds_pin_then_marked_then_latest(project):
    _write(project)
    # A prefix of digits, which Guild's flag syntax would read as a number.
    old = _guild_run(project, "prepare", started=1, prefix="09223831")
    latest = _guild_run(project, "prepare", started=3)
    _guild_run(project, "train", started=4)  # a step's op: not required

    def pinned() -> dict:
        plan = _checked(project).spec.plan
        return plan.step_flags("train", {"lr": 0.01})

    assert pinned() == {"lr": 0.01, "operation:prepare": latest}
    marked = _guild_run(project, "prepare", started=2, marked=True)
    assert pinned() == {"lr": 0.01, "operation:prepare": marked}
    # The user's pin, a prefix of a run id, is given the run's full id.
    _write(project, f"operation:prepare: '{old[:8]}'")
    assert pinned() == {"lr": 0.01, "operation:prepare": old}
    plan = _checked(project).spec.plan
    assert plan.step_flags("evaluate", {"lr": 0.01}) == {}, "pinned by the trial"


def test_a_list_of_pins_is_searched_each_by_its_full_id(project):
    _write(project)
    first = _guild_run(project, "prepare", started=1)
    second = _guild_run(project, "prepare", started=2)
    _write(project, f"operation:prepare: ['{first[:6]}', '{second[:6]}']")

    plan = _checked(project).spec.plan

    assert [p.key for p in plan.searched] == ["lr", "operation:prepare"]
    for given, run_id in ((first, first), (second, second)):
        sampled = {"operation:prepare": given[:6], "lr": 0.01}
        assert plan.step_flags("train", sampled)["operation:prepare"] == run_id


@pytest.mark.parametrize("cluster", [False, True], ids=["local", "cluster"])
def test_a_missing_required_run_stops_the_tune_before_any_trial(project, cluster):
    _write(project)
    flags = []
    if cluster:  # one line before Ray is asked: nothing listens there
        write_guild_config(project, {"geronimo": {"address": closed_address()}})
        flags = ["cluster=geronimo"]

    line = tune_check_error(project, *flags)

    assert line == (
        "step train requires operation:prepare: no suitable run for prepare: run "
        "prepare first, or pin a run with `operation:prepare: RUN_ID` in the space"
    )
    _guild_run(project, "prepare", started=1)
    _write(project, "operation:prepare: 'feed'")
    assert tune_check_error(project, *flags) == (
        "step train requires operation:prepare=feed: no suitable run for prepare: "
        "run prepare first, or pin a run with `operation:prepare: RUN_ID` in the "
        "space"
    )


def test_a_required_run_over_the_size_policy_stops_the_tune(project):
    _write(project)
    big = _guild_run(project, "prepare", started=1, **{"data.bin": 3 * 2**20})
    remote = {"address": closed_address(), "max-copy-mb": 2}
    write_guild_config(project, {"geronimo": remote})

    line = tune_check_error(project, "cluster=geronimo")

    assert line == (
        f"run {big[:8]} (prepare), which step train requires, is 3.0 MB, over "
        "max-copy-mb (2 MB) of remote 'geronimo': raise max-copy-mb there to send "
        "it to the nodes, or pin a smaller run with `operation:prepare: RUN_ID` in "
        "the space"
    )
    # Locally nothing travels: no limit.
    assert tune_check_error(project) is None


def test_required_runs_travel_with_the_runs_they_require(tmp_path):
    """A chain: prepare's file is a link into fetch's run, as Guild makes it
    with `target-type: link` (absolute here): both go, the link relative."""
    home = tmp_path / "guild-home"
    fetch, prepare = "f" * 32, "a" * 32
    (home / "runs" / fetch).mkdir(parents=True)
    (home / "runs" / fetch / "raw.txt").write_text("fetched")
    (home / "runs" / prepare / ".guild" / "attrs").mkdir(parents=True)
    deps = {"operation:fetch": {"operation:fetch": {"config": fetch}}}
    (home / "runs" / prepare / ".guild" / "attrs" / "deps").write_text(
        yaml.safe_dump(deps)
    )
    os.symlink(home / "runs" / fetch / "raw.txt", home / "runs" / prepare / "raw.txt")
    runs = (upstream.UpstreamRun("train", "operation:prepare", None, prepare, "p"),)

    ids = upstream.sent_run_ids(runs, str(home))
    packed = upstream.pack(str(home), ids)
    node = tmp_path / "node"
    node.mkdir()
    bundle = upstream.UpstreamBundle(tuple(ids), "ref")
    with mock.patch("ray.get", return_value=packed) as fetched:
        upstream.install(str(node), bundle)
        upstream.install(str(node), bundle)  # a second trial on the node

    assert ids == [prepare, fetch]
    assert fetched.call_count == 1, "once per node"
    link = node / "runs" / prepare / "raw.txt"
    assert os.readlink(link) == os.path.join("..", fetch, "raw.txt")
    assert link.read_text() == "fetched"
    upstream.remove_installed(str(node), bundle.run_ids)
    assert os.listdir(node / "runs") == []


def test_a_run_from_a_node_comes_home_as_a_run_of_the_project(tmp_path):
    """Guild's files of a run name where it ran: on the node, the project's
    copy in Ray's working dir and the node's Guild home. At home they name
    the project and GUILD_HOME, as a local run's do."""
    run_id = "0123456789abcdef" * 2
    node_src = tmp_path / "ray" / "session_1" / "working_dir_files" / "_ray_pkg_1"
    node_home = tmp_path / "node" / "gpkg-ray-runs-x"
    project = tmp_path / "project"
    guild_home = tmp_path / "guild-home"
    (guild_home / "runs").mkdir(parents=True)
    run = node_home / "runs" / run_id
    (run / ".guild" / "attrs").mkdir(parents=True)
    (run / ".guild" / "opref").write_text(
        f"guildfile:{node_src}/guild.yml 73cf2de9 '' train"
    )
    env = {
        "PROJECT_DIR": str(node_src),
        "PYTHONPATH": f".:/venv/site-packages:{node_src}",
        "RUN_DIR": str(run),
        "GUILD_HOME": str(node_home),
        "TMPDIR": str(tmp_path / "node"),
    }
    op = {"deps": [{"location": str(node_src)}], "op-cmd": {"cmd-env": env}}
    for name, value in (("env", env), ("op", op), ("flags", {"lr": 0.1})):
        (run / ".guild" / "attrs" / name).write_text(yaml.safe_dump(value))
    collector = RunCollector(str(guild_home), "geronimo", str(project))

    def deliver(trial_id, node, batch):
        return collector.receive(trial_id, node, pickle.loads(pickle.dumps(batch)))

    sender = RunSender(deliver, str(node_home), 2**20, NodeInfo("ip", "b", "n"))
    sender.sync("t1", [run_id], run_id, force=True)
    (run / "model.json").write_text("{}")
    time.sleep(0.01)
    sender.sync("t1", [run_id], None, force=True)

    home = guild_home / "runs" / run_id
    assert (home / ".guild" / "opref").read_text() == (
        f"guildfile:{project}/guild.yml 73cf2de9 '' train"
    )
    env_home = yaml.safe_load((home / ".guild" / "attrs" / "env").read_text())
    assert env_home == {
        "PROJECT_DIR": str(project),
        "PYTHONPATH": f".:/venv/site-packages:{project}",
        "RUN_DIR": str(home),
        "GUILD_HOME": str(guild_home),
        "TMPDIR": str(tmp_path / "node"),  # the node's, as it was there
    }
    op_home = yaml.safe_load((home / ".guild" / "attrs" / "op").read_text())
    assert op_home == {"deps": [{"location": str(project)}],
                       "op-cmd": {"cmd-env": env_home}}  # fmt: skip
    assert (home / "model.json").read_text() == "{}"
    assert yaml.safe_load((home / ".guild" / "attrs" / "ray_node").read_text())[
        "run_dir"
    ] == str(run)
    assert collector.refused == []
    # Guild reads it as a run of the project.
    from gpkg_ray import guild_api

    opref = guild_api.open_run(str(guild_home), run_id).opref
    assert (opref.pkg_name, opref.op_name) == (str(project / "guild.yml"), "train")
    assert Path(opref.pkg_name).parent == project
