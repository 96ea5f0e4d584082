"""The report's figures, drawn with matplotlib's object API (no pyplot: no
global state, no display needed).

- `objective_over_time`: each trial's objective when it ended, and the best so
  far, in seconds, minutes or hours by the tune's span (`time_unit`);
- `params_vs_objective`: each searched value against the objective, trials
  stopped early marked at their last value (or on the x axis, without one);
- `learning_curves`: the watched metric of every trial per step, trials stopped
  early dashed and ending in an x;
- `importance_bars`: which searched values mattered (results.importance);
- `parallel_coordinates`: each completed trial a line across its values and
  its objective;
- `two_values_map`: the objective over the two most important values, a
  contour where both are ranges.
"""

from __future__ import annotations

import contextlib
import math

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gpkg_ray.files import replaced
from gpkg_ray.results.curves import Curve
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.trial.result import scalar_key
from gpkg_ray.tuning_spec import Choice, Objective, Param, Range

COMPLETED = "#1f77b4"
STOPPED = "#999999"
FAILED = "#d62728"
BEST = "#ff7f0e"
DPI = 100


def objective_over_time(
    outcomes: list[TrialOutcome], objective: Objective, started: float
) -> Figure:
    """Objective against the time from `started` to each trial's end."""
    fig = Figure(figsize=(7, 4), dpi=DPI)
    ax = fig.add_subplot()
    ended = sorted(
        (o for o in outcomes if o.ended is not None and o.objective is not None),
        key=lambda o: o.ended,
    )
    completed = [o for o in ended if o.status == "completed"]
    others = [o for o in ended if o.status != "completed"]
    span = max((o.ended - started for o in ended), default=0.0)
    seconds, unit = time_unit(span)
    elapsed = lambda o: (o.ended - started) / seconds  # noqa: E731
    ax.scatter(
        [elapsed(o) for o in completed],
        [o.objective for o in completed],
        color=COMPLETED,
        label="completed",
        zorder=3,
    )
    if others:
        ax.scatter(
            [elapsed(o) for o in others],
            [o.objective for o in others],
            color=STOPPED,
            marker="x",
            label="stopped (value when stopped)",
            zorder=3,
        )
    best_x, best_y = _best_so_far(completed, objective, elapsed)
    if best_x:
        ax.step(best_x, best_y, where="post", color=BEST, label="best so far")
    title = f"{objective.scalar} of each trial ({objective.mode})"
    return _finish(fig, ax, f"{unit} since the tune started", objective.scalar, title)


def time_unit(span: float) -> tuple[float, str]:
    """(seconds per unit, unit) to show a span of `span` seconds in: seconds
    up to 2 minutes, minutes up to 2 hours, then hours (a 15 s tune in
    minutes is all 0.0x)."""
    if span <= 120:
        return 1.0, "seconds"
    if span <= 2 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


def _finish(fig: Figure, ax, xlabel: str, ylabel: str, title: str) -> Figure:
    """Labels, a light grid, and a legend when something was drawn."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def _best_so_far(completed, objective: Objective, elapsed):
    xs, ys, best = [], [], None
    for o in completed:
        if objective.is_better(o.objective, best):
            best = o.objective
        xs.append(elapsed(o))
        ys.append(best)
    return xs, ys


def params_vs_objective(
    outcomes: list[TrialOutcome], objective: Objective, params: list[Param]
) -> Figure:
    """One panel per searched param: its value in each trial against the
    trial's objective: completed trials as dots, trials stopped early as grey
    crosses at their last value (`last_value`), or as grey ticks on the x axis
    when they logged none. A log range gets a log axis; a choice, one column
    per value."""
    columns = min(3, max(1, len(params)))
    rows = math.ceil(max(1, len(params)) / columns)
    fig = Figure(figsize=(3.6 * columns, 3.2 * rows), dpi=DPI)
    completed = [
        (o, o.objective)
        for o in outcomes
        if o.status == "completed" and o.objective is not None
    ]
    stopped = [(o, last_value(o, objective)) for o in outcomes if o.status == "stopped"]
    # Stopped before the objective's step logged it (an ASHA stop in `train`
    # of train + evaluate): where the search went, marked along the x axis.
    unvalued = [o for o, value in stopped if value is None]
    stopped = [(o, value) for o, value in stopped if value is not None]
    for i, param in enumerate(params):
        ax = fig.add_subplot(rows, columns, i + 1)
        xs = _param_axis(ax, param)
        ax.scatter(
            xs(o for o, _ in completed),
            [y for _, y in completed],
            color=COMPLETED,
            alpha=0.8,
            label="completed",
        )
        if stopped:
            ax.scatter(
                xs(o for o, _ in stopped),
                [y for _, y in stopped],
                color=STOPPED,
                marker="x",
                label="stopped (last value)",
            )
        if unvalued:
            ax.scatter(
                xs(unvalued),
                [0.03] * len(unvalued),
                transform=ax.get_xaxis_transform(),  # y: a fraction of the panel
                color=STOPPED,
                marker="|",
                s=200,
                label=f"stopped before {objective.scalar} was logged",
            )
            ax.margins(y=0.12)  # the ticks below the lowest point, not on it
        ax.set_xlabel(param.key)
        if i % columns == 0:
            ax.set_ylabel(objective.scalar)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{objective.scalar} against each searched value")
    if (stopped or unvalued) and fig.axes:
        # Below the panels, which are small: a legend in one would hide points.
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize="small")
        fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    return fig


def _param_axis(ax, param: Param):
    """Sets up the x axis of `param`'s panel; returns what maps trials to x."""
    if isinstance(param.domain, Choice):
        choices = list(param.domain.values)
        ax.set_xticks(range(len(choices)), [str(c) for c in choices])
        ax.set_xlim(-0.5, len(choices) - 0.5)
        return lambda trials: [
            _choice_index(choices, o.values.get(param.key)) for o in trials
        ]
    if isinstance(param.domain, Range) and param.domain.log:
        ax.set_xscale("log")
    return lambda trials: [o.values.get(param.key) for o in trials]


def last_value(outcome: TrialOutcome, objective: Objective) -> float | None:
    """The last value of the objective a trial's step logged: for a trial
    stopped early, where it was when it stopped (not the limit penalty a
    trial stopped at a limit has as its objective); None if it logged none."""
    logged = outcome.metrics.get(scalar_key(objective.step, objective.scalar))
    if logged is not None:
        return logged
    return None if outcome.penalized else outcome.objective


def _choice_index(choices: list, value) -> int:
    try:
        return choices.index(value)
    except ValueError:  # a warm-start trial's value outside today's choices
        return -1


def learning_curves(
    curves: list[Curve], metric: Objective, best: TrialOutcome | None
) -> Figure:
    """Every trial's curve: completed ones in blue (the best in orange), trials
    stopped early dashed grey ending in an x, failed ones dotted red."""
    fig = Figure(figsize=(7, 4), dpi=DPI)
    ax = fig.add_subplot()
    labelled: set[str] = set()
    for curve in curves:
        xs = [x for x, _ in curve.points]
        ys = [y for _, y in curve.points]
        status = curve.trial.status
        is_best = best is not None and curve.trial.number == best.number
        style = _curve_style(status, is_best)
        label = style.pop("label")
        ax.plot(xs, ys, label=None if label in labelled else label, **style)
        labelled.add(label)
        if status == "stopped":
            ax.plot(xs[-1:], ys[-1:], marker="x", color=STOPPED, linestyle="none")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"{metric.step}#{metric.scalar} per step, each trial"
    return _finish(fig, ax, "step", metric.scalar, title)


def _curve_style(status: str, is_best: bool) -> dict:
    if is_best:
        return {"color": BEST, "linewidth": 2.5, "zorder": 4, "label": "best trial"}
    if status == "stopped":
        return {
            "color": STOPPED,
            "linestyle": "--",
            "linewidth": 1,
            "label": "stopped early",
        }
    if status == "failed":
        return {"color": FAILED, "linestyle": ":", "linewidth": 1, "label": "failed"}
    return {"color": COMPLETED, "linewidth": 1, "alpha": 0.7, "label": "completed"}


def save_png(fig: Figure, path: str) -> None:
    with replaced(path, "wb") as f:  # whole: a restart writes it again
        fig.savefig(f, format="png")


def pareto_front(
    outcomes: list[TrialOutcome],
    objectives: tuple[Objective, ...],
    front: list[TrialOutcome],
) -> Figure:
    """The first two objectives of each completed trial: the Pareto front's
    trials in orange, joined in order, and numbered; the others in blue;
    trials that break a constraint as grey crosses."""
    first, second = objectives[0], objectives[1]
    fig = Figure(figsize=(7, 4.5), dpi=DPI)
    ax = fig.add_subplot()
    on_front = {o.number for o in front}

    def points(trials):
        values = [o.objective_values() for o in trials]
        return [v[0] for v in values], [v[1] for v in values]

    scored = [
        o
        for o in outcomes
        if o.status == "completed"
        and len(o.objective_values()) == len(objectives)
        and None not in o.objective_values()
    ]
    feasible = [o for o in scored if o.feasible and o.number not in on_front]
    infeasible = [o for o in scored if not o.feasible]
    if feasible:
        ax.scatter(*points(feasible), color=COMPLETED, alpha=0.8, label="completed")
    if infeasible:
        ax.scatter(*points(infeasible), color=STOPPED, marker="x", label="infeasible")
    ranked = sorted(front, key=lambda o: o.objective_values()[0])
    xs, ys = points(ranked)
    ax.plot(xs, ys, color=BEST, marker="o", zorder=4, label="Pareto front")
    for o, x, y in zip(ranked, xs, ys, strict=True):
        ax.annotate(str(o.number), (x, y), textcoords="offset points", xytext=(4, 4))
    title = f"Pareto front: {first.mode} {first.scalar}, {second.mode} {second.scalar}"
    return _finish(fig, ax, first.scalar, second.scalar, title)


def importance_bars(
    values: list[tuple[str, float]], method: str, trials: int
) -> Figure:
    """Each searched value's importance as a bar, the most important on top."""
    fig = Figure(figsize=(6, max(3.2, 0.5 * len(values) + 1.4)), dpi=DPI)
    ax = fig.add_subplot()
    keys = [key for key, _ in reversed(values)]
    scores = [score for _, score in reversed(values)]
    bars = ax.barh(keys, scores, color=COMPLETED)
    ax.bar_label(bars, [f"{s:.2f}" for s in scores], padding=3, fontsize="small")
    ax.set_xlim(0, max(1.0, max(scores, default=0) * 1.15))
    ax.grid(alpha=0.3, axis="x")
    return _finish(
        fig,
        ax,
        "importance (sums to 1)",
        "",
        f"Which values mattered ({method}, {trials} trials)",
    )


def parallel_coordinates(
    outcomes: list[TrialOutcome], objective: Objective, params: list[Param]
) -> Figure:
    """One vertical axis per searched value and one for the objective, each
    completed trial a line across them, coloured by its objective (the best
    in orange, on top). Each axis spans its range in the space (a log range
    on a log scale, a choice's values evenly); the objective's, the values
    the trials reached."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    completed = [
        o for o in outcomes if o.status == "completed" and o.objective is not None
    ]
    fig = Figure(figsize=(max(6.0, 1.6 * (len(params) + 1) + 2), 4.5), dpi=DPI)
    ax = fig.add_subplot()
    values = [o.objective for o in completed]
    low, high = min(values, default=0.0), max(values, default=1.0)
    norm = Normalize(low, high if high > low else low + 1)
    # Brighter is better, whichever way the objective goes.
    cmap = colormaps["viridis" if objective.mode == "max" else "viridis_r"]
    axes = [_ParallelAxis.of(p) for p in params]
    xs = list(range(len(axes) + 1))
    best = None
    for o in completed:
        if objective.is_better(o.objective, None if best is None else best.objective):
            best = o
    for o in completed:
        ys = [a.position(o.values.get(a.key)) for a in axes]
        ys.append(norm(o.objective) if high > low else 0.5)
        is_best = o is best
        ax.plot(
            xs,
            ys,
            color=BEST if is_best else cmap(norm(o.objective)),
            linewidth=2.5 if is_best else 1.2,
            alpha=1.0 if is_best else 0.8,
            zorder=4 if is_best else 2,
        )
    for x, a in enumerate(axes):
        ax.axvline(x, color="#444", linewidth=0.8, zorder=1)
        for y, text in a.ticks():
            ax.text(x + 0.03, y, text, fontsize="x-small", va="center", zorder=5)
    ax.axvline(len(axes), color="#444", linewidth=0.8, zorder=1)
    ax.set_xticks(xs, [a.key for a in axes] + [objective.scalar])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) + 0.4)
    ax.set_ylim(-0.05, 1.05)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=objective.scalar)
    # No legend: it would hide an axis's labels.
    ax.set_title(
        f"Each completed trial across its values and {objective.scalar}"
        + (" (the best in orange)" if best is not None else "")
    )
    fig.tight_layout()
    return fig


class _ParallelAxis:
    """Where a param's values sit on its parallel-coordinates axis (0 to 1)."""

    def __init__(self, key: str, choices: list | None, low=0.0, high=1.0, log=False):
        self.key, self.choices = key, choices
        self.low, self.high, self.log = low, high, log

    @classmethod
    def of(cls, param: Param) -> _ParallelAxis:
        if isinstance(param.domain, Choice):
            return cls(param.key, list(param.domain.values))
        d = param.domain
        return cls(param.key, None, d.low, d.high, d.log and d.low > 0)

    def _scaled(self, value: float) -> float:
        return math.log10(value) if self.log else value

    def position(self, value) -> float:
        if self.choices is not None:
            if len(self.choices) < 2 or value not in self.choices:
                return 0.5
            return self.choices.index(value) / (len(self.choices) - 1)
        try:
            low, high = self._scaled(self.low), self._scaled(self.high)
            return (self._scaled(float(value)) - low) / (high - low or 1)
        except (TypeError, ValueError):
            return 0.5

    def ticks(self) -> list[tuple[float, str]]:
        if self.choices is not None:
            return [(self.position(c), str(c)) for c in self.choices]
        return [(0.0, f"{self.low:.3g}"), (1.0, f"{self.high:.3g}")]


def two_values_map(
    outcomes: list[TrialOutcome], objective: Objective, x: Param, y: Param
) -> Figure:
    """The objective over two searched values (the two most important): each
    completed trial a dot coloured by its objective, the best a star, and
    where both are ranges and the trials allow, contours interpolated between
    them (in log space for a log range)."""
    from matplotlib import colormaps
    from matplotlib.ticker import FuncFormatter

    completed = [
        o for o in outcomes if o.status == "completed" and o.objective is not None
    ]
    fig = Figure(figsize=(6.5, 5), dpi=DPI)
    ax = fig.add_subplot()
    cmap = colormaps["viridis" if objective.mode == "max" else "viridis_r"]
    px = [_map_coordinate(x, o.values.get(x.key)) for o in completed]
    py = [_map_coordinate(y, o.values.get(y.key)) for o in completed]
    zs = [o.objective for o in completed]
    ranges = isinstance(x.domain, Range) and isinstance(y.domain, Range)
    if ranges and len({(a, b) for a, b in zip(px, py, strict=True)}) >= 4:
        # Points on a line make no triangles: the dots alone, then.
        with contextlib.suppress(RuntimeError, ValueError):
            ax.tricontourf(px, py, zs, levels=12, cmap=cmap, alpha=0.55)
    dots = ax.scatter(px, py, c=zs, cmap=cmap, edgecolors="k", linewidths=0.5, zorder=3)
    best = None
    for i, o in enumerate(completed):
        if best is None or objective.is_better(o.objective, completed[best].objective):
            best = i
    if best is not None:
        ax.scatter(
            [px[best]],
            [py[best]],
            marker="*",
            s=260,
            color=BEST,
            edgecolors="k",
            zorder=4,
            label="best trial",
        )
        ax.legend(loc="best", fontsize="small")
    fig.colorbar(dots, ax=ax, label=objective.scalar)
    for param, axis in ((x, ax.xaxis), (y, ax.yaxis)):
        if isinstance(param.domain, Choice):
            labels = [str(c) for c in param.domain.values]
            axis.set_ticks(range(len(labels)), labels)
        elif _is_log(param):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{10**v:.3g}"))
    ax.set_xlabel(x.key)
    ax.set_ylabel(y.key)
    ax.set_title(f"{objective.scalar} over {x.key} and {y.key}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _is_log(param: Param) -> bool:
    return isinstance(param.domain, Range) and param.domain.log and param.domain.low > 0


def _map_coordinate(param: Param, value) -> float:
    """A value's place on its axis: a choice's index, a log range's log10."""
    if isinstance(param.domain, Choice):
        return float(_choice_index(list(param.domain.values), value))
    return math.log10(value) if _is_log(param) else float(value)
