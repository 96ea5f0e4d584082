"""A small Guild project for the end-to-end tests.

`train` prints `step` and `loss` per epoch and saves a model. With `hold` set to
a path, it waits after its first epoch until that file exists (a test releases
it on an event, instead of a long `sleep`). Its `mode`: `crash`
exits non-zero, `silent` makes the evaluation record no `acc_val`, `hog` takes
20 MB more memory each epoch, `daemon` starts a process that daemonizes
(setsid, double fork) and sleeps, `daemon-hog` one that takes 20 MB more
every quarter second (daemon.py; each records its pid in the project's
`daemon-pids` before train goes on), `flaky` crashes the first time it runs with its
`lr` in the project (a marker file says it ran). Its loss is `lr` times the
epochs left, so a lower `lr` is better at every epoch and in `acc_val` (1 - lr).
Three evaluate ops record `acc_val` three ways: Guild's default output scalars,
custom `output-scalars` patterns, and TF event files the script writes itself.
"""

from __future__ import annotations

import os
import textwrap

import psutil


def tune_config(space: str) -> str:
    """A `tune` config of train + evaluate maximizing acc_val over `space`."""
    space = textwrap.indent(textwrap.dedent(space).strip(), "  ")
    return f"steps: [train, evaluate]\noptimize:\n  - max: acc_val\nspace:\n{space}\n"


TUNE_CONFIG = tune_config(
    """
    lr: loguniform[1e-3:1e-1]
    batch-size: [16, 32, 64]
    """
)

GUILD_YML = """
- model: ''
  extends: gpkg.ray/tune
  operations:
    train:
      main: train
      flags:
        lr: 0.01
        batch-size:
          default: 32
          choices: [16, 32, 64]
        epochs: 2
        sleep: 0.0
        hold: ''
        mode:
          default: ok
          choices: [ok, crash, silent, hog, flaky, daemon, daemon-hog]
    evaluate:
      main: evaluate
      requires:
        - operation: train
    evaluate-custom:
      main: evaluate_custom
      requires:
        - operation: train
      output-scalars:
        acc_val: 'validation accuracy is (\\value)'
    evaluate-tb:
      main: evaluate_tb
      requires:
        - operation: train
      output-scalars: no
    tune:
      config:
{tune_config}
    tune-custom:
      # A tune op besides `tune` (docs/guide.md); the next one reuses it.
      <<: &tuner
        main: gpkg_ray.tuner
        flags-dest: args
        flags-import: no
        sourcecode: no
        output-scalars: no
        flags:
          $include: tune:tune
      config:
        steps: [train, evaluate-custom]
        optimize:
          - max: evaluate-custom#acc_val
        space:
          lr: loguniform[1e-3:1e-1]
    tune-tb:
      <<: *tuner
      config:
        steps: [train, evaluate-tb]
        optimize:
          - min: loss_val
        space:
          lr: loguniform[1e-3:1e-1]
"""

TRAIN = """
import json
import os
import sys
import time

lr = 0.01
batch_size = 32
epochs = 2
sleep = 0.0
hold = ""
mode = "ok"


def daemonize():
    # A process that escapes its parent: setsid and a double fork.
    pids = os.path.join(os.environ["PROJECT_DIR"], "daemon-pids")
    script = os.path.join(os.environ["PROJECT_DIR"], "daemon.py")
    child = os.fork()
    if child == 0:
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            os.execv(sys.executable, [sys.executable, script, mode])
        with open(pids, "a") as f:
            f.write(f"{daemon}\\n")
        os._exit(0)
    os.waitpid(child, 0)


hogged = []
if mode.startswith("daemon"):
    daemonize()
for step in range(epochs):
    if step == 1 and hold:
        deadline = time.time() + 120  # a test that fails does not hang here
        while not os.path.exists(hold) and time.time() < deadline:
            time.sleep(0.05)
    time.sleep(sleep)
    if mode == "hog":
        hogged.append(b"x" * (20 * 1024 * 1024))  # written: resident
    print(f"step: {step}")
    print(f"loss: {lr * (epochs - step):.6f}")
if mode == "crash":
    raise SystemExit("train crashed on purpose")
marker = os.path.join(os.environ["PROJECT_DIR"], f"flaky-{lr}")
if mode == "flaky" and not os.path.exists(marker):
    open(marker, "w").close()
    raise SystemExit("train crashed, this time")
with open("model.json", "w") as f:
    json.dump({"lr": lr, "batch_size": batch_size, "mode": mode}, f)
"""

DAEMON = """
import sys
import time

held = []
deadline = time.time() + 120  # a test that fails leaves it no longer
while time.time() < deadline:
    if sys.argv[1] == "daemon-hog" and len(held) < 20:
        held.append(b"x" * (20 * 1024 * 1024))  # written: resident
    time.sleep(0.25)
"""

EVALUATE = """
import json

with open("model.json") as f:
    model = json.load(f)
if model["mode"] == "silent":
    print("acc: 0.5")
else:
    print(f"acc_val: {1 - model['lr']:.6f}")
"""

EVALUATE_CUSTOM = """
import json

with open("model.json") as f:
    model = json.load(f)
print(f"validation accuracy is {1 - model['lr']:.6f}")
"""

EVALUATE_TB = """
import json

from tensorboardX import SummaryWriter

with open("model.json") as f:
    model = json.load(f)
with SummaryWriter("logs") as writer:
    writer.add_scalar("loss_val", model["lr"] * 2, 0)
print("wrote logs")
"""


def write_project(project, tune_config: str = TUNE_CONFIG) -> None:
    config = textwrap.indent(textwrap.dedent(tune_config).strip(), " " * 8)
    project.write("guild.yml", GUILD_YML.replace("{tune_config}", config))
    project.write("train.py", TRAIN)
    project.write("daemon.py", DAEMON)
    project.write("evaluate.py", EVALUATE)
    project.write("evaluate_custom.py", EVALUATE_CUSTOM)
    project.write("evaluate_tb.py", EVALUATE_TB)


def tune_check_error(project, *flags: str, op: str = "tune") -> str | None:
    """What `guild run OP FLAGS` in `project` stops with before Guild creates any
    run, checked in this process: the one error line (less its `guild: `), or
    None when the tune would start.

    The same two checks in the same order as the CLI: Guild's own flag checks
    (the package's flag definitions: type, choices, min/max; none of them
    with `--force-flags` among FLAGS), then the check gpkg.ray's Guild plugin
    makes (`TunePlugin.apply_cmd_env`), with the project's cwd (its
    guild-config.yml), HOME and GUILD_HOME.
    """
    from unittest import mock

    from guild import config, op_util

    from gpkg_ray.errors import GpkgRayError

    with (
        mock.patch.dict(os.environ, project.env, clear=True),
        config.SetCwd(str(project.path)),
        config.SetGuildHome(str(project.guild_home)),
    ):
        opdef = op_util.opdef_for_opspec(op)
        force = "--force-flags" in flags
        assigns = [flag for flag in flags if flag != "--force-flags"]
        user_flags, parse_errors = op_util.parse_flag_assigns(assigns, opdef)
        assert not parse_errors, parse_errors
        try:
            flag_vals = op_util.flag_vals_for_opdef(opdef, user_flags, force)
        except op_util.InvalidFlagValue as e:  # as guild's run command words it
            return f"invalid value {e.value} for {e.flag.name}: {e.msg}"
        try:
            plugin_check(opdef, flag_vals, user_flags)
        except GpkgRayError as e:
            return str(e)
    return None


def plugin_check(opdef, flag_vals: dict, user_flags: dict) -> None:
    """The check gpkg.ray's Guild plugin makes of a tune op and its resolved
    flags before Guild creates the run; raises GpkgRayError."""
    from guild import config

    from gpkg_ray.preparation import check_tune

    check_tune(opdef, flag_vals, user_flags, opdef.opref, config.guild_home())


def daemon_pids(project) -> list[int]:
    """The pids `train` recorded of what it daemonized (mode `daemon*`)."""
    pids = project.path / "daemon-pids"
    return [int(pid) for pid in pids.read_text().split()] if pids.exists() else []


def daemons_running(project) -> list[psutil.Process]:
    """What `train` daemonized that still runs (a pid that names another
    process since is not the project's daemon.py)."""
    running = []
    for pid in daemon_pids(project):
        try:
            proc = psutil.Process(pid)
            if str(project.path / "daemon.py") in proc.cmdline():
                running.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return running


def kill_daemons(project) -> None:
    """Ends what a failed test left of `train`'s daemons, by pid."""
    for proc in daemons_running(project):
        proc.kill()
