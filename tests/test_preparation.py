"""The preparation of a tune, in-process: what the plugin checks before Guild
creates the run, and what the tuner builds from it once."""

from __future__ import annotations

import pytest
import yaml
from guild import guildfile

from gpkg_ray.errors import SpecError
from gpkg_ray.preparation import SEED_STRIDE, check_tune, prepare_attempt
from gpkg_ray.tuning_spec import Settings, flag_name

GUILD_YML = """
- model: ''
  extends: gpkg.ray/tune
  operations:
    train: {main: train, flags: {lr: 0.01}}
    evaluate: {main: evaluate, requires: [{operation: train}]}
    tune:
      config:
        steps: [train, evaluate]
        optimize: [{max: acc}]
        space: {lr: 'loguniform[1e-4:1e-1]'}
"""


@pytest.fixture
def tune_opdef(project):
    project.write("guild.yml", GUILD_YML)
    return guildfile.for_dir(str(project.path)).models[""].get_operation("tune")


def _flags(**changes) -> dict:
    import dataclasses

    flags = {flag_name(f.name): f.default for f in dataclasses.fields(Settings)}
    flags.update({flag_name(k): v for k, v in changes.items()})
    return flags


def _check(tune_opdef, project, flags, user_flags=()):
    from guild.opref import OpRef

    opref = OpRef("guildfile", tune_opdef.guildfile.src, "", "", "tune")
    return check_tune(tune_opdef, flags, user_flags, opref, str(project.guild_home))


def test_a_local_tune_is_checked_once_into_everything_it_needs(tune_opdef, project):
    checked = _check(tune_opdef, project, _flags(max_trials=3))

    assert checked.cluster is None
    assert [s.name for s in checked.spec.plan.steps] == ["train", "evaluate"]
    assert [op.name for op in checked.step_opdefs] == ["train", "evaluate"]
    assert checked.project_dir == str(project.path)
    assert checked.spec.settings.max_trials == 3
    assert checked.warm_runs == ()


def test_a_clusters_trial_resources_are_checked_as_flags(
    tune_opdef, project, monkeypatch
):
    # A remote whose defaults leave a trial no resource: refused as the flags
    # cpus=0 gpus=0 would be, before the cluster (nothing listens) is asked.
    config = project.path / "guild-config.yml"
    remote = {
        "type": "ray-cluster",
        "address": "127.0.0.1:1",
        "trial-cpus": 0,
        "trial-gpus": 0,
    }
    config.write_text(yaml.safe_dump({"remotes": {"lab": remote}}))
    monkeypatch.setenv("GUILD_CONFIG", str(config))

    with pytest.raises(SpecError) as e:
        _check(tune_opdef, project, _flags(cluster="lab"))
    assert "cpus=0 and gpus=0" in str(e.value)
    assert "trial-cpus/trial-gpus of remote 'lab'" in str(e.value)


def test_the_flags_are_checked_before_the_cluster_is_looked_up(tune_opdef, project):
    with pytest.raises(SpecError, match="unknown search 'bogus'"):
        _check(tune_opdef, project, _flags(cluster="no-such-remote", search="bogus"))


def test_a_first_attempt_takes_the_seed_flag_and_its_searcher_seed(
    tune_opdef, project, tmp_path
):
    checked = _check(tune_opdef, project, _flags(seed=7))
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir()

    prepared = prepare_attempt(checked, "f" * 32, str(run_dir), str(project.guild_home))

    assert (prepared.attempt, prepared.seed, prepared.search_seed) == (1, 7, 7)
    assert prepared.tag == "tune-ffffffff"
    inputs = prepared.search_inputs()
    assert (inputs.trials, inputs.rerun, inputs.told) == (20, (), ())


def test_a_later_attempt_keeps_the_first_seed_and_moves_its_searcher_on(
    tune_opdef, project, tmp_path
):
    from gpkg_ray.resume.journal import Journal

    checked = _check(tune_opdef, project, _flags())
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir()
    Journal(str(run_dir)).attempt(1, seed=11)

    prepared = prepare_attempt(checked, "f" * 32, str(run_dir), str(project.guild_home))

    assert (prepared.attempt, prepared.seed) == (2, 11)
    assert prepared.search_seed == 11 + SEED_STRIDE


def test_warm_start_from_a_run_that_does_not_exist(tune_opdef, project):
    with pytest.raises(SpecError, match="warm-start: no run 'abc123'"):
        _check(tune_opdef, project, _flags(search="tpe", warm_start="abc123"))
