"""A slurm remote's config and its batch script, in process (no SLURM): the
e2e tests with a real SLURM are in test_slurm.py."""

from __future__ import annotations

import subprocess

import pytest

from gpkg_ray.engine.interrupts import _job_ending
from gpkg_ray.errors import ClusterError
from gpkg_ray.remote.config import cluster_config
from gpkg_ray.remote.slurm import JobState, SlurmSpec, job_script, slurm_spec


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"nodes": 0},
            "remote 'hpc': slurm: nodes must be a whole number >= 1, not '0'",
        ),
        (
            {"gpus-per-node": 1.5},
            "remote 'hpc': slurm: gpus-per-node must be a whole number >= 0, not '1.5'",
        ),
        (
            # YAML's reading of an unquoted 1:00:00 (base 60)
            {"time": 3600.5},
            "remote 'hpc': slurm: time must be SLURM's time limit, e.g. "
            '"4:00:00" or "1-12:00:00" (quoted), not \'3600.5\'',
        ),
        (
            {"sbatch": "--account=ml"},
            "remote 'hpc': slurm: sbatch must be a list of sbatch options, e.g. "
            "`sbatch: [--account=ml, --qos=normal]`",
        ),
        (
            {"cpus": 4},
            "remote 'hpc': unknown key 'slurm: cpus' (slurm takes partition, "
            "nodes, cpus-per-node, gpus-per-node, time, port, python, output, "
            "sbatch, stop-before)",
        ),
        ({"port": 70000}, "remote 'hpc': slurm: port must be <= 65535"),
    ],
)
def test_a_bad_slurm_key_is_one_line_naming_it(raw, message):
    with pytest.raises(ClusterError) as e:
        slurm_spec("hpc", raw)
    assert str(e.value) == message


def test_a_slurm_remote_takes_no_address():
    with pytest.raises(ClusterError) as e:
        cluster_config("hpc", {"slurm": {}, "address": "10.0.0.5:6379"})
    assert str(e.value) == (
        "remote 'hpc': a slurm remote's head is its job's first node: remove "
        "address and local (set slurm: port for the head's port)"
    )


def test_the_job_script_is_rays_slurm_recipe_with_the_remotes_options():
    spec = slurm_spec(
        "hpc",
        {
            "partition": "gpu",
            "nodes": 2,
            "cpus-per-node": 8,
            "gpus-per-node": 2,
            "time": "4:00:00",
            "port": 6390,
            "python": "/opt/env/bin/python",
            "output": "/scratch/ray-%j.log",
            "sbatch": ["--account=ml"],
        },
    )
    script = job_script("hpc", spec)

    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=gpkg-ray-hpc",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --output=/scratch/ray-%j.log",
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-task=2",
        "#SBATCH --time=4:00:00",
        "#SBATCH --account=ml",
    ]
    assert "/opt/env/bin/ray start --head --block" in script
    assert "--port=6390 --include-dashboard=false --num-gpus=2 --num-cpus=8" in script
    assert '/opt/env/bin/ray start --block --address="$head_ip:6390"' in script
    assert "TOKEN" not in script.replace("RAY_AUTH_TOKEN)", "")  # no token in it
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize(
    "job, text",
    [
        (
            JobState("7", "RUNNING", "59:30", ("n1", "n2")),
            "SLURM job 7 running on n1,n2, time left 59:30",
        ),
        (JobState("7", "PENDING", reason="Priority"), "SLURM job 7 pending (Priority)"),
        (
            JobState("7", "TIMEOUT", time_limit="1:00"),
            "SLURM job 7 ended: TIMEOUT, it reached its time limit (1:00)",
        ),
        (JobState("7", "CANCELLED"), "SLURM job 7 ended: CANCELLED, it was cancelled"),
        (JobState("7", "GONE"), "SLURM job 7 ended (SLURM no longer lists it)"),
    ],
)
def test_a_job_is_described_in_one_phrase(job, text):
    assert job.describe() == text


def test_defaults_leave_the_choice_to_slurm():
    assert slurm_spec("hpc", {}) == SlurmSpec()
    script = job_script("hpc", SlurmSpec())
    assert "--partition" not in script and "--time" not in script


@pytest.mark.parametrize(
    "job, reason",
    [
        (JobState("7", "RUNNING", "2:01", time_limit="1:00:00"), None),
        (JobState("7", "RUNNING", "UNLIMITED"), None),
        (
            JobState("7", "RUNNING", "1:59", time_limit="1:00:00"),
            "SLURM job 7 is 119 s from its time limit (1:00:00); stop-before is 120 s",
        ),
        (
            JobState("7", "CANCELLED"),
            "SLURM job 7 ended: CANCELLED, it was cancelled",
        ),
    ],
)
def test_a_tune_stops_stop_before_seconds_before_its_jobs_limit(job, reason):
    assert _job_ending(job, 120) == reason
