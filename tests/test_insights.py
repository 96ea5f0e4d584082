"""Understanding a tune's results, in process: which values mattered
(importance), the best trial as `guild run` lines, the report's plots of them,
and the report written while the tune runs (test_live_report checks them on
a real tune)."""

from __future__ import annotations

import math
import pickle
import random
import re
import shlex
from pathlib import Path

import pytest
from conftest import PNG_SIGNATURE, check_report, wait_for
from PIL import Image

from gpkg_ray.errors import SpecError
from gpkg_ray.listener import SearchStarted
from gpkg_ray.results import live_report
from gpkg_ray.results.importance import MIN_TRIALS, importance, importance_line
from gpkg_ray.results.live_report import LiveReport
from gpkg_ray.results.report import TuneRun, write_report
from gpkg_ray.results.summary import best_commands, closing_lines, shell_lines
from gpkg_ray.results.trials import write_trials
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import (
    Choice,
    Fixed,
    Objective,
    Param,
    Range,
    Settings,
    Step,
    TrialPlan,
    TuneSpec,
)
from gpkg_ray.tuning_spec.space import FlagDef
from gpkg_ray.tuning_spec.steps import UpstreamRun

OBJECTIVE = Objective("acc_val", "max", "evaluate")
TUNE = TuneRun("1234abcd" + "0" * 24, seed=7)
TRAIN_FLAGS = {name: FlagDef() for name in ("lr", "dropout", "batch-size", "epochs")}
STEPS = (
    Step("train", "train", TRAIN_FLAGS),
    Step("evaluate", "evaluate", {}, pins={"operation:train": "train"}),
)
PARAMS = (
    Param("lr", Range(1e-5, 1e-1, log=True), (("train", "lr"),)),
    Param("dropout", Range(0.0, 0.5), (("train", "dropout"),)),
    Param("batch-size", Choice((16, 32, 64)), (("train", "batch-size"),)),
    Param("train:epochs", Fixed(3), (("train", "epochs"),)),
)
PLAN = TrialPlan(STEPS, PARAMS, OBJECTIVE, OBJECTIVE)
SPEC = TuneSpec(PLAN, Settings())


def _trials(n: int, seed: int = 3) -> list[TrialOutcome]:
    """Completed trials whose objective is lr's alone (best at 1e-3), but for
    a little of dropout; batch-size does nothing."""
    rng = random.Random(seed)
    outcomes = []
    for number in range(1, n + 1):
        values = {
            "lr": 10 ** rng.uniform(-5, -1),
            "dropout": rng.uniform(0, 0.5),
            "batch-size": rng.choice([16, 32, 64]),
            "train:epochs": 3,
        }
        outcome = TrialOutcome(number, values, status="completed")
        outcome.objective = 1 - (math.log10(values["lr"]) + 3) ** 2 / 10
        outcome.objective += 0.02 * values["dropout"]
        outcome.ended = outcome.started + number
        outcomes.append(outcome)
    return outcomes


# Importance


def test_importance_ranks_the_value_that_decides_the_objective_first():
    result = importance(_trials(30), OBJECTIVE, list(PLAN.searched))

    assert result.values[0][0] == "lr"
    assert result.values[0][1] > 0.5
    assert {key for key, _ in result.values} == {"lr", "dropout", "batch-size"}
    assert math.isclose(sum(v for _, v in result.values), 1.0)
    assert result.trials == 30


def test_importance_counts_only_completed_trials_with_values_in_the_space():
    outcomes = _trials(8)
    outcomes[0].status = "stopped"  # a partial objective
    outcomes[1].status, outcomes[1].objective = "failed", None
    outcomes[2].objective = float("nan")
    outcomes[3].values["batch-size"] = 128  # a warm-start trial's, say

    assert importance(outcomes, OBJECTIVE, list(PLAN.searched)).trials == 4


def test_importance_needs_a_few_trials_and_two_searched_values():
    few = importance(_trials(MIN_TRIALS - 1), OBJECTIVE, list(PLAN.searched))
    assert few.values == []
    assert importance_line(few) == (
        f"Importance: none ({MIN_TRIALS - 1} completed trials; it needs at least "
        f"{MIN_TRIALS})"
    )
    one = importance(_trials(10), OBJECTIVE, [PARAMS[0]])
    assert importance_line(one) == "Importance: none (fewer than two values searched)"


def test_importance_line_names_the_method_and_each_value():
    line = importance_line(importance(_trials(30), OBJECTIVE, list(PLAN.searched)))

    assert re.fullmatch(
        r"Importance \(PED-ANOVA, 30 trials\): lr 0\.\d\d, "
        r"(dropout|batch-size) 0\.\d\d, (dropout|batch-size) 0\.\d\d",
        line,
    ), line


# The best trial as commands


def test_best_trial_commands_run_each_step_with_its_values():
    best = TrialOutcome(
        3,
        {"lr": 0.000123456789, "dropout": 0.25, "batch-size": 64, "train:epochs": 3},
    )

    lines = best_commands(best, PLAN)

    assert lines == [
        "guild run train lr=0.000123456789 dropout=0.25 batch-size=64 epochs=3",
        "guild run evaluate operation:train=$(guild select -o train)",
    ]


def test_best_trial_command_quotes_values_for_the_shell_and_forces_new_flags():
    steps = (Step("train", "m:train", {"opt": FlagDef()}),)
    params = (
        Param("opt", Choice(("adam w", "x;y")), (("train", "opt"),)),
        Param("extra", Fixed("$HOME"), (("train", "extra"),)),
    )
    plan = TrialPlan(steps, params, OBJECTIVE, OBJECTIVE)
    best = TrialOutcome(1, {"opt": "x;y", "extra": "$HOME"})

    (line,) = best_commands(best, plan)

    # `extra` is no flag of train: given with --force-flags, as the tune did.
    assert line == "guild run --force-flags m:train 'opt=x;y' 'extra=$HOME'"
    assert shlex.split(line)[4:] == ["opt=x;y", "extra=$HOME"]


def test_best_trial_command_pins_a_run_from_outside_the_trial_by_its_id():
    steps = (
        Step("train", "train", TRAIN_FLAGS, requires={"operation:prepare": "prepare"}),
    )
    upstream = (UpstreamRun("train", "operation:prepare", None, "f" * 32, "prepare"),)
    plan = TrialPlan(steps, PARAMS[:1], OBJECTIVE, OBJECTIVE, upstream)

    (line,) = best_commands(TrialOutcome(1, {"lr": 0.01}), plan)

    assert line == f"guild run train lr=0.01 operation:prepare={'f' * 32}"


def test_summary_ends_with_importance_and_the_best_trials_commands():
    outcomes = _trials(12)
    best = max(outcomes, key=lambda o: o.objective)

    lines = closing_lines(
        outcomes, PLAN, importance(outcomes, OBJECTIVE, list(PLAN.searched))
    )

    assert lines[0].startswith("Importance (PED-ANOVA, 12 trials): lr ")
    again = lines.index(f"Best trial {best.number} again:")
    train, evaluate = best_commands(best, PLAN)
    assert all(len(line) <= 80 for line in lines)
    # The train command is longer than a line: it goes on after backslashes.
    assert lines[again + 1 : -1] == shell_lines(train.split(" "), 80)
    assert lines[-1] == f"  {evaluate}"
    assert evaluate == "guild run evaluate operation:train=$(guild select -o train)"
    assert best_commands(None, PLAN) == []


def test_summary_of_one_searched_value_has_no_importance_line():
    plan = TrialPlan(STEPS, PARAMS[:1], OBJECTIVE, OBJECTIVE)
    outcomes = _trials(5)

    lines = closing_lines(outcomes, plan, importance(outcomes, OBJECTIVE, [PARAMS[0]]))

    assert lines[0].startswith("Best trial ")


# The report's plots and page


def _report(tmp_path: Path, outcomes, refresh: int = 0) -> tuple[Path, str]:
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir(exist_ok=True)
    if not refresh:
        write_trials(str(run_dir), outcomes, OBJECTIVE, {})
    home = tmp_path / "guild-home"
    (home / "runs").mkdir(parents=True, exist_ok=True)
    page = write_report(str(run_dir), outcomes, SPEC, str(home), TUNE, refresh=refresh)
    return run_dir, Path(page).read_text()


def test_report_shows_importance_parallel_coordinates_and_the_top_two_map(tmp_path):
    run_dir, html = _report(tmp_path, _trials(12))

    check_report(
        run_dir,
        expect_curves=False,
        more={"importance.png", "parallel.png", "contour.png"},
    )
    for name in ("importance.png", "parallel.png", "contour.png"):
        data = (run_dir / "report" / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE
        with Image.open(run_dir / "report" / name) as image:
            assert min(image.size) >= 280, (name, image.size)
    assert "<h2>Importance</h2>" in html
    section = html[html.index('class="importance"') :]
    rows = re.findall(
        r"<tr><th>([^<]+)</th><td>([0-9.]+)</td></tr>",
        section[: section.index("</table>")],
    )
    assert rows[0][0] == "lr" and len(rows) == 3
    assert "The objective over lr and " in html
    assert "the two most important values" in html


def test_report_of_few_trials_says_why_no_importance(tmp_path):
    run_dir, html = _report(tmp_path, _trials(3))

    check_report(run_dir, expect_curves=False, more={"parallel.png", "contour.png"})
    assert "None computed: 3 completed trials; it needs at least 4." in html
    assert "The objective over lr and dropout</figcaption>" in html


def test_live_page_reloads_itself_and_counts_running_trials(tmp_path):
    outcomes = _trials(5)
    outcomes[4].status, outcomes[4].objective = "running", None

    _, html = _report(tmp_path, outcomes, refresh=15)

    assert '<meta http-equiv="refresh" content="15">' in html
    assert "5 trials: 1 running, 4 completed, 0 stopped, 0 failed" in html
    assert "reloads itself every 15 s" in html
    assert "trials.csv" not in html  # written at the end


def test_live_page_before_any_objective_has_the_table_and_no_plots(tmp_path):
    outcomes = [TrialOutcome(1, _trials(1)[0].values)]

    _, html = _report(tmp_path, outcomes, refresh=5)

    assert "<img" not in html and "No learning curves" not in html
    assert "1 trials: 1 running" in html


# The live report as a listener


def test_live_report_writes_as_trials_report_and_stops_on_close(tmp_path, monkeypatch):
    # No wait of ten times a write between writes: this test waits on pages.
    monkeypatch.setattr(live_report, "WAIT_FACTOR", 0)
    run_dir = tmp_path / "tune-run"
    run_dir.mkdir()
    # One trial of an earlier attempt: on the page from the start.
    earlier = TrialOutcome(1, _trials(1)[0].values, status="stopped")
    live = LiveReport(str(run_dir), SPEC, str(tmp_path), TUNE, 0.05, [earlier])
    page = run_dir / "report" / "index.html"
    live.search_started(SearchStarted(trials=2, seed=7, scheduler="fifo"))
    running = TrialOutcome(2, _trials(2)[1].values)
    live.trial_started(running)
    try:
        wait_for(lambda: page.exists() and "1 running" in page.read_text())
        assert "2 trials: 1 running, 0 completed, 1 stopped" in page.read_text()
        running.status, running.objective = "completed", 0.5
        live.trial_ended(running)
        wait_for(lambda: "1 completed" in page.read_text())
    finally:
        live.close()
    writes = live.writes
    live.trial_updated(running)  # after close: nothing more is written
    assert live.writes == writes
    assert '<meta http-equiv="refresh" content="1">' in page.read_text()


def test_live_report_pickles_as_ray_pickles_callbacks(tmp_path):
    live = LiveReport(str(tmp_path), SPEC, str(tmp_path), TUNE, 1, _trials(1))
    live.search_started(SearchStarted(trials=1, seed=7, scheduler="fifo"))
    try:
        restored = pickle.loads(pickle.dumps(live))
    finally:
        live.close()
    assert restored.every == 1 and list(restored._outcomes) == [1]
    restored.trial_started(TrialOutcome(2, {}))  # the copy writes nothing
    restored.close()
    assert restored.writes == 0


def test_live_report_off_writes_nothing(tmp_path):
    live = LiveReport(str(tmp_path), SPEC, str(tmp_path), TUNE, 0)
    live.search_started(SearchStarted(trials=1, seed=7, scheduler="fifo"))
    live.trial_started(TrialOutcome(1, {}))
    live.close()
    assert live.writes == 0 and not (tmp_path / "report").exists()


def test_report_every_must_be_a_number_of_zero_or_more():
    assert Settings.from_flags({"report-every": 0}).report_every == 0
    with pytest.raises(SpecError) as e:
        Settings.from_flags({"report-every": -1})
    assert str(e.value) == (
        "report-every=-1 must be a finite number of 0 or more (0 = only at the end)"
    )


def test_a_long_command_goes_on_with_backslashes_within_the_width():
    tokens = ["guild", "run", "train", *(f"flag{i}=0.000123456789" for i in range(8))]

    lines = shell_lines(tokens, 80)

    assert len(lines) == 3
    assert all(len(line) <= 80 for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1])
    assert " ".join(line.rstrip("\\").strip() for line in lines) == " ".join(tokens)
    assert shell_lines(["guild", "run", "evaluate"], 80) == ["  guild run evaluate"]
