"""Progress lines, the summary table and the report's figures, from trial
outcomes made here (the tune tests check them on real tunes)."""

from __future__ import annotations

import io

from gpkg_ray.results import plots
from gpkg_ray.results.curves import Curve
from gpkg_ray.results.progress import ProgressPrinter, format_duration
from gpkg_ray.results.summary import summary_lines, table_lines
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Choice, Objective, Param, Range

OBJECTIVE = Objective("acc", "max", "evaluate")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _outcome(number: int, started: float, **values) -> TrialOutcome:
    return TrialOutcome(number, values, started=started)


def _end(outcome, clock, status="completed", objective=None, **fields):
    outcome.status = status
    outcome.objective = objective
    outcome.ended = clock.now
    for name, value in fields.items():
        setattr(outcome, name, value)
    return outcome


def test_progress_counts_estimates_time_left_and_names_the_best():
    clock, out = Clock(), io.StringIO()
    printer = ProgressPrinter(
        4, OBJECTIVE, ["lr", "units"], out=out, started=clock.now, clock=clock
    )
    clock.now += 3
    first = _outcome(1, clock.now, lr=0.0123456, units=64, epochs=5)
    second = _outcome(2, clock.now, lr=0.5, units=128, epochs=5)
    printer.trial_started(first)
    printer.trial_started(second)
    clock.now += 10
    printer.trial_ended(_end(first, clock, objective=0.81))
    clock.now += 2
    printer.trial_ended(_end(second, clock, "stopped", stop_reason="stopped early"))

    lines = out.getvalue().splitlines()
    assert lines == [
        "[0:03] trial 1/4 started: lr=0.01235 units=64",
        "[0:03] trial 2/4 started: lr=0.5 units=128",
        "[0:13] trial 1/4 completed: acc=0.81  (best so far)",
        # 3 trials left, 10 s each so far, 2 at a time.
        "[0:13] 1 running, 1/4 done (1 completed, 0 stopped, 0 failed), ~0:15 left",
        "       best acc=0.81: trial 1, lr=0.01235 units=64",
        "[0:15] trial 2/4 stopped: stopped early",
        "[0:15] 0 running, 2/4 done (1 completed, 1 stopped, 0 failed), ~0:11 left",
    ]


def test_progress_lines_fit_80_columns_and_time_left_keeps_to_the_budget():
    clock, out = Clock(), io.StringIO()
    printer = ProgressPrinter(
        10, OBJECTIVE, ["a-long-flag-name"], time_budget=30, out=out, clock=clock
    )
    outcome = _outcome(1, clock.now, **{"a-long-flag-name": "x" * 100})
    printer.trial_started(outcome)
    clock.now += 20
    printer.trial_ended(_end(outcome, clock, objective=0.5))

    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].endswith("...")
    # 9 trials of 20 s would take 3 min; the budget has 10 s left.
    assert "~0:10 left" in lines[2]


def test_failed_trial_keeps_its_whole_error_and_a_resumed_tune_counts_earlier_trials():
    clock, out = Clock(), io.StringIO()
    earlier = _end(_outcome(1, clock.now, lr=0.1), clock, objective=0.9)
    printer = ProgressPrinter(
        3, OBJECTIVE, ["lr"], finished=[earlier], out=out, clock=clock
    )
    outcome = _outcome(2, clock.now, lr=0.2)
    printer.trial_started(outcome)
    error = "step train failed (run 1234abcd, exit 1): " + "a long message " * 8
    printer.trial_ended(_end(outcome, clock, "failed", error=error))

    lines = out.getvalue().splitlines()
    assert lines[1] == f"[0:00] trial 2/3 failed: {error}"
    assert "2/3 done (1 completed, 0 stopped, 1 failed)" in lines[2]
    assert printer.best_line() == "best acc=0.9: trial 1, lr=0.1"


def test_a_trial_run_again_says_once_which_step_runs_it_reused():
    clock, out = Clock(), io.StringIO()
    printer = ProgressPrinter(2, OBJECTIVE, ["lr"], out=out, clock=clock)
    outcome, train = _outcome(2, clock.now, lr=0.2), "1a2b3c4d" + "0" * 24
    outcome.runs = {"train": train}
    outcome.restart("the tune was killed")
    printer.trial_started(outcome)
    outcome.runs, outcome.reused = {"train": train}, {"train": train}
    printer.trial_updated(outcome)
    outcome.runs["evaluate"] = "5" * 32
    printer.trial_updated(outcome)
    printer.trial_ended(_end(outcome, clock, objective=0.8))

    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "[0:00] trial 2/2 runs again (attempt 2): the tune was killed",
        "[0:00] trial 2/2: train reused (run 1a2b3c4d)",
        "[0:00] trial 2/2 completed: acc=0.8  (best so far)",
    ]


def test_format_duration():
    assert [format_duration(s) for s in (0, 7.4, 750, 3723)] == [
        "0:00",
        "0:07",
        "12:30",
        "1:02:03",
    ]


def test_summary_table_ranks_completed_trials_and_leaves_out_what_does_not_fit():
    clock = Clock()
    outcomes = [
        _end(_outcome(1, 0, lr=0.001, units=64), clock, objective=0.7),
        _end(_outcome(2, 0, lr=0.01, units=128), clock, objective=0.9),
        _end(_outcome(3, 0, lr=0.1, units=32), clock, "stopped", objective=0.95),
    ]
    outcomes[1].runs = {"train": "aaaaaaaa1111", "evaluate": "bbbbbbbb2222"}

    lines = summary_lines(outcomes, OBJECTIVE, ["lr", "units"])

    assert lines == [
        "3 trials: 2 completed, 1 stopped, 0 failed",
        "Top trials (max acc):",
        "  trial  acc  lr     units  runs",
        "      2  0.9  0.01   128    aaaaaaaa bbbbbbbb",
        "      1  0.7  0.001  64",
    ]
    wide = table_lines(["trial", "acc", "x" * 40, "y" * 40, "runs"], [])
    assert wide == [
        "  trial  acc  " + "x" * 40 + "  runs",
        "  (1 more values in trials.csv)",
    ]


def test_learning_curves_show_stopped_trials_dashed_with_an_x():
    clock = Clock()
    done = _end(_outcome(1, 0), clock, objective=0.9)
    best = _end(_outcome(2, 0), clock, objective=0.95)
    stopped = _end(_outcome(3, 0), clock, "stopped", objective=0.4)
    curves = [
        Curve(done, [(1, 0.5), (2, 0.8), (3, 0.9)]),
        Curve(best, [(1, 0.6), (2, 0.9), (3, 0.95)]),
        Curve(stopped, [(1, 0.4)]),
    ]

    figure = plots.learning_curves(curves, OBJECTIVE, best)

    (ax,) = figure.axes
    styles = [(line.get_linestyle(), line.get_marker()) for line in ax.get_lines()]
    assert styles == [("-", "None"), ("-", "None"), ("--", "None"), ("None", "x")]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "completed",
        "best trial",
        "stopped early",
    ]


def test_params_panels_use_log_axes_for_log_ranges_and_columns_for_choices():
    clock = Clock()
    outcomes = [
        _end(_outcome(n, 0, lr=10.0**-n, units=units), clock, objective=n / 10)
        for n, units in ((1, 32), (2, 64), (3, 32))
    ]
    params = [
        Param("lr", Range(1e-4, 1e-1, log=True), (("train", "lr"),)),
        Param("units", Choice((32, 64, 128)), (("train", "units"),)),
    ]

    figure = plots.params_vs_objective(outcomes, OBJECTIVE, params)

    lr_ax, units_ax = figure.axes
    assert lr_ax.get_xscale() == "log"
    assert [t.get_text() for t in units_ax.get_xticklabels()] == ["32", "64", "128"]
    (points,) = units_ax.collections
    assert [x for x, _ in points.get_offsets()] == [0, 1, 0]


def _elapsed_axis(span: float):
    clock = Clock()
    outcome = _outcome(1, 0, lr=0.1)
    clock.now = clock.now + span
    _end(outcome, clock, objective=0.5)
    figure = plots.objective_over_time([outcome], OBJECTIVE, Clock().now)
    (ax,) = figure.axes
    (points, *_) = ax.collections
    ((x, _),) = points.get_offsets()
    return ax.get_xlabel(), float(x)


def test_objective_plot_counts_time_in_a_unit_that_fits_the_tune():
    # A 15 s tune in seconds, not 0.25 minutes; longer ones in minutes, hours.
    assert _elapsed_axis(15) == ("seconds since the tune started", 15)
    assert _elapsed_axis(45 * 60) == ("minutes since the tune started", 45)
    assert _elapsed_axis(3 * 3600) == ("hours since the tune started", 3)


def test_values_plot_shows_stopped_trials_marked_at_their_last_value():
    clock = Clock()
    key = f"{OBJECTIVE.step}/{OBJECTIVE.scalar}"
    outcomes = [
        _end(_outcome(1, 0, lr=0.01), clock, objective=0.9),
        # Stopped early by a scheduler: its objective is where it stopped.
        _end(_outcome(2, 0, lr=0.02), clock, "stopped", objective=0.4),
        # Stopped at a limit with the penalty: shown at what it logged ...
        _end(_outcome(3, 0, lr=0.03), clock, "stopped", objective=-1.0,
             penalized=True, metrics={key: 0.3}),
        # ... and on the x axis if it logged nothing, as one an ASHA stop in
        # `train` cut before `evaluate` logged the objective.
        _end(_outcome(4, 0, lr=0.04), clock, "stopped", objective=-1.0,
             penalized=True),
        _end(_outcome(5, 0, lr=0.05), clock, "stopped"),
        _end(_outcome(6, 0, lr=0.06), clock, "failed"),
    ]  # fmt: skip
    params = [Param("lr", Range(1e-3, 1e-1, log=True), (("train", "lr"),))]

    figure = plots.params_vs_objective(outcomes, OBJECTIVE, params)

    (ax,) = figure.axes
    completed, stopped, unvalued = ax.collections
    assert [tuple(p) for p in completed.get_offsets()] == [(0.01, 0.9)]
    assert [tuple(p) for p in stopped.get_offsets()] == [(0.02, 0.4), (0.03, 0.3)]
    assert [x for x, _ in unvalued.get_offsets()] == [0.04, 0.05]
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "completed",
        "stopped (last value)",
        "stopped before acc was logged",
    ]
