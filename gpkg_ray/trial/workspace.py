"""Where a trial's step runs happen: a project directory and a Guild home."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gpkg_ray import guild_api
from gpkg_ray.environ import STEP_TUNE_VAR
from gpkg_ray.faults import FAULT_VAR

# Variables Guild sets for the tune run itself. A step started from inside the tune
# run must not inherit them: they describe the tune run, not the step.
_TUNE_RUN_VARS = (
    "RUN_DIR",
    "RUN_ID",
    "GUILD_OP",
    "FLAGS_DEST",
    "GUILD_SOURCECODE",
    "GUILD_PLUGINS",
    "CMD_DIR",
    "PROJECT_DIR",
)
# The embedded Ray's credentials stay with Ray: user code in a step has no use for
# them, and would otherwise join the tuner's cluster with `ray.init()`.
_RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE")


@dataclass(frozen=True)
class Workspace:
    project_dir: str
    guild_home: str
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every step run (e.g. NO_PIP_FREEZE=1)."""
    tune_run_id: str | None = None
    """The tune run the steps are for: in their environment (STEP_TUNE_VAR),
    so that a restart finds what a killed attempt left running."""

    def run_dir(self, run_id: str) -> str:
        return guild_api.run_dir(self.guild_home, run_id)

    def step_env(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in _TUNE_RUN_VARS
            and name not in _RAY_VARS
            and name != STEP_TUNE_VAR  # a tune that is a step of another's
            and name != FAULT_VAR  # the test hook kills the tune, not its steps
            and not name.startswith("FLAG_")
        }
        env["GUILD_HOME"] = self.guild_home
        if self.tune_run_id is not None:
            env[STEP_TUNE_VAR] = self.tune_run_id
        env.update(self.env)
        return env
