"""The tune's report: PNG plots and a small HTML page that shows them with the
tune run's id, seed and settings and the trials table, written to `report/` in
the tune run directory.

    guild open TUNE_RUN -p report/index.html     # or any browser, any copy of it

Everything the page links to is in the folder (the images, a copy of
trials.csv), by relative path, so the folder can be copied or served alone.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from gpkg_ray import faults
from gpkg_ray.files import replaced
from gpkg_ray.listener import SearchStarted, TuneListener
from gpkg_ray.results.importance import METHOD, Importance, importance
from gpkg_ray.results.progress import format_value
from gpkg_ray.results.summary import STATUSES
from gpkg_ray.results.trials import (
    TRIALS_CSV,
    best_trial,
    count_status,
    pareto_front,
    ranked_trials,
)
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Choice, Range, Settings, TuneSpec, flag_name

REPORT_DIR = "report"
INDEX = "index.html"
MAP_TRIALS = 3
"""Completed trials the map of the two most important values needs."""


@dataclass(frozen=True)
class TuneRun:
    """Which tune the report is of: what reproduces it, with its settings."""

    run_id: str
    seed: int
    """The tune's seed (the flag's, else the one it drew): `seed=` runs the
    same search again."""
    attempts: int = 1


class ReportPreload(TuneListener):
    """Imports matplotlib in a thread once the search starts (not while Ray
    starts, which has the CPUs busy), so the report at the end does not wait
    ~1 s for it."""

    def search_started(self, search: SearchStarted) -> None:
        threading.Thread(
            target=import_plots, name="report-preload", daemon=True
        ).start()


def import_plots() -> None:
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    from gpkg_ray.results import plots  # noqa: F401


def write_report(
    run_dir: str,
    outcomes: list[TrialOutcome],
    spec: TuneSpec,
    guild_home: str,
    tune: TuneRun,
    *,
    refresh: int = 0,
) -> str:
    """Writes the report; returns the path of its page. `refresh`: the tune
    still runs, and the page reloads itself every `refresh` seconds (see
    live_report); 0: the tune has ended."""
    # matplotlib costs ~1 s to import: only when a report is written. Guild
    # logs INFO in its ops; matplotlib's font cache notes are not for users.
    import_plots()
    from gpkg_ray.results import plots

    report_dir = os.path.join(run_dir, REPORT_DIR)
    os.makedirs(report_dir, exist_ok=True)
    searched = list(spec.plan.searched)
    values = importance(outcomes, spec.plan.objective, searched)
    # A live page before any trial logged its objective: the table alone.
    started = refresh and not any(o.objective is not None for o in outcomes)
    figures = [] if started else _figures(outcomes, spec, guild_home, values)
    for name, _, figure in figures:
        plots.save_png(figure, os.path.join(report_dir, name))
        if not refresh:  # the report at the end (a live write is not that point)
            faults.point("report-write")
    # A copy, not `../trials.csv`: the folder may be copied alone. While the
    # tune runs there is none yet (or an earlier attempt's): no link.
    trials_csv = os.path.join(run_dir, TRIALS_CSV)
    has_csv = not refresh and os.path.isfile(trials_csv)
    if has_csv:
        with (
            open(trials_csv, "rb") as src,
            replaced(os.path.join(report_dir, TRIALS_CSV), "wb") as dest,
        ):
            shutil.copyfileobj(src, dest)
    page = os.path.join(report_dir, INDEX)
    images = [(name, title) for name, title, _ in figures]
    # Each file put in place whole: a browser never reads half a page, and a
    # restart writes the report again.
    with replaced(page) as f:
        f.write(_page(outcomes, spec, tune, images, has_csv, values, refresh))
    return page


def _figures(
    outcomes: list[TrialOutcome],
    spec: TuneSpec,
    guild_home: str,
    values: Importance,
) -> list[tuple[str, str, Any]]:
    """(file name, title, figure) of each plot the trials so far make."""
    from gpkg_ray.results import plots
    from gpkg_ray.results.curves import learning_curves

    plan = spec.plan
    best = best_trial(outcomes, plan.objective)
    started = min((o.started for o in outcomes), default=time.time())
    searched = list(plan.searched)
    figures = [
        (
            "objective.png",
            "Objective of each trial over time",
            plots.objective_over_time(outcomes, plan.objective, started),
        ),
        (
            "params.png",
            "Searched values against the objective",
            plots.params_vs_objective(outcomes, plan.objective, searched),
        ),
    ]
    if plan.more_objectives:
        front = pareto_front(outcomes, plan.objectives)
        figures.append(
            (
                "pareto.png",
                "Pareto front of the first two objectives",
                plots.pareto_front(outcomes, plan.objectives, front),
            )
        )
    curves = learning_curves(outcomes, plan.scheduler_metric, guild_home)
    # One value per trial (an evaluate step's score) makes no curve.
    if any(len(c.points) > 1 for c in curves):
        figures.append(
            (
                "curves.png",
                "Learning curves",
                plots.learning_curves(curves, plan.scheduler_metric, best),
            )
        )
    completed = ranked_trials(outcomes, plan.objective)
    if values.values:
        figures.append(
            (
                "importance.png",
                "Which searched values mattered",
                plots.importance_bars(values.values, METHOD, values.trials),
            )
        )
    # The most important first, where importance says; else the space's order.
    order = {key: i for i, (key, _) in enumerate(values.values)}
    ranked = sorted(
        (p for p in searched if isinstance(p.domain, Range | Choice)),
        key=lambda p: order.get(p.key, len(order)),
    )
    if ranked and completed:
        figures.append(
            (
                "parallel.png",
                "Parallel coordinates: each completed trial across its values",
                plots.parallel_coordinates(outcomes, plan.objective, ranked),
            )
        )
    if len(ranked) >= 2 and len(completed) >= MAP_TRIALS:
        x, y = ranked[:2]
        figures.append(
            (
                "contour.png",
                f"The objective over {x.key} and {y.key}"
                + (", the two most important values" if values.values else ""),
                plots.two_values_map(outcomes, plan.objective, x, y),
            )
        )
    return figures


def _page(
    outcomes: list[TrialOutcome],
    spec: TuneSpec,
    tune: TuneRun,
    images: list[tuple[str, str]],
    has_csv: bool,
    values: Importance,
    refresh: int = 0,
) -> str:
    statuses = ("running", *STATUSES) if refresh else STATUSES
    counts = ", ".join(f"{count_status(outcomes, s)} {s}" for s in statuses)
    figures = "\n".join(
        f'<figure><img src="{name}" alt="{html.escape(title)}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for name, title in images
    )
    if images and "curves.png" not in dict(images):
        metric = spec.plan.scheduler_metric.describe()
        figures += (
            f"\n<p>No learning curves: the watched metric ({html.escape(metric)}) "
            "has one value per trial. Set <code>scheduler-metric</code> in the tune "
            "config to a scalar a step logs each epoch to plot them.</p>"
        )
    csv_link = f' (all values: <a href="{TRIALS_CSV}">{TRIALS_CSV}</a>)'
    if refresh:
        state = (
            f'<p class="live">The tune is running: this page is written again as '
            f"trials report and reloads itself every {refresh} s "
            f"(written {time.strftime('%H:%M:%S')}).</p>"
        )
        head = f'<meta http-equiv="refresh" content="{refresh}">\n'
    else:
        state, head = "", ""
    return _TEMPLATE.format(
        head=head,
        title=html.escape(
            "Tune: " + "; ".join(o.describe() for o in spec.plan.objectives)
        ),
        run=_run_line(tune),
        state=state,
        counts=html.escape(f"{len(outcomes)} trials: {counts}")
        + (csv_link if has_csv else ""),
        table=_trials_table(outcomes, spec),
        importance=_importance_section(values),
        figures=figures,
        settings=_settings_table(spec),
    )


def _importance_section(values: Importance) -> str:
    """Which values mattered, as a table, or why it is not known."""
    if not values.values:
        return (
            '<h2>Importance</h2>\n<p class="importance">None computed: '
            f"{html.escape(values.reason)}.</p>"
        )
    rows = "\n".join(
        f"<tr><th>{html.escape(key)}</th><td>{score:.3f}</td></tr>"
        for key, score in values.values
    )
    return (
        f"<h2>Importance</h2>\n<p>Which searched values mattered ({METHOD} on "
        f"{values.trials} completed trials; 1 in all):</p>\n"
        f'<table class="importance">\n{rows}\n</table>'
    )


def _run_line(tune: TuneRun) -> str:
    attempts = f", {tune.attempts} attempts" if tune.attempts > 1 else ""
    return (
        f"Tune run <code>{html.escape(tune.run_id)}</code>, "
        f"seed {tune.seed}{attempts} "
        f"(<code>guild runs info {html.escape(tune.run_id[:8])}</code>)"
    )


def _settings_table(spec: TuneSpec) -> str:
    """The steps, the objective, each searched or fixed space entry, then
    every flag of the tune op with its value."""
    plan = spec.plan
    rows = [
        ("steps", ", ".join(s.name for s in plan.steps)),
        ("optimize", "; ".join(o.describe() for o in plan.objectives)),
        *(
            [("constraints", "; ".join(c.describe() for c in plan.constraints))]
            if plan.constraints
            else []
        ),
        ("scheduler-metric", plan.scheduler_metric.describe()),
        *(
            (
                f"space: {p.key}",
                p.domain.describe() + ("" if p in plan.searched else " (every trial)"),
            )
            for p in plan.params
        ),
        *_setting_rows(spec.settings),
    ]
    body = "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f'<table class="settings">\n{body}\n</table>'


def _setting_rows(settings: Settings) -> list[tuple[str, str]]:
    rows = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        rows.append((flag_name(f.name), _setting_text(value, f.metadata)))
    return rows


def _setting_text(value: Any, metadata: Mapping[str, Any]) -> str:
    """As Guild shows the flag: a blank one by its null label (`seed: random`),
    a whole float without its `.0`."""
    if value is None:
        return metadata.get("null-label") or ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _trials_table(outcomes: list[TrialOutcome], spec: TuneSpec) -> str:
    """Every trial, the completed ones best first, then the others by number."""
    plan = spec.plan
    keys = [p.key for p in plan.searched]
    ranked = ranked_trials(outcomes, plan.objective)
    front = pareto_front(outcomes, plan.objectives) if plan.more_objectives else []
    ranked = front + [o for o in ranked if o not in front]
    ranked_numbers = {o.number for o in ranked}
    rest = sorted(
        (o for o in outcomes if o.number not in ranked_numbers), key=lambda o: o.number
    )
    names = [o.scalar for o in plan.objectives]
    headers = ["trial", "status", *names, *keys, "runs", "note"]
    rows = [
        [
            str(o.number),
            o.status,
            *_objective_cells(o, len(names)),
            *(format_value(o.values.get(k, "")) for k in keys),
            " ".join(f"{step} {run_id[:8]}" for step, run_id in o.runs.items()),
            _note(o, o in front),
        ]
        for o in ranked + rest
    ]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _objective_cells(outcome: TrialOutcome, count: int) -> list[str]:
    values = outcome.objective_values()
    if len(values) != count:  # stopped early: the first objective's value
        values = [outcome.objective] + [None] * (count - 1)
    return ["" if v is None else f"{v:.6g}" for v in values]


def _note(outcome: TrialOutcome, on_front: bool) -> str:
    notes = ["Pareto front"] if on_front else []
    if not outcome.feasible:
        notes.append("infeasible (breaks a constraint)")
    notes += [text for text in (outcome.stop_reason, outcome.error) if text]
    return "; ".join(notes)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{head}<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }}
th {{ background: #f4f4f4; }}
table.settings th {{ font-weight: normal; background: none; }}
figure {{ display: inline-block; margin: 1em 1em 1em 0; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{run}</p>
{state}<p>{counts}</p>
{table}
{importance}
{figures}
<h2>Settings</h2>
{settings}
</body>
</html>
"""
