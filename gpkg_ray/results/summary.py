"""The summary printed at the end of a tune: the counts, then a table of the top
trials (their searched values, objective and step runs) that fits 80 columns.

    8 trials: 7 completed, 1 stopped, 0 failed
    Top trials (max acc_val):
      trial  acc_val  lr         batch-size  dropout  runs
          3  0.8512   0.001234   64          0.3104   1a2b3c4d 5e6f7a8b

and ends with which values mattered and the commands that run the best trial
again:

    Importance (PED-ANOVA, 8 trials): lr 0.81, dropout 0.12, batch-size 0.07
    Best trial 3 again:
      guild run train lr=0.001234 batch-size=64 dropout=0.3104
      guild run evaluate operation:train=$(guild select -o train)
"""

from __future__ import annotations

import shlex
import textwrap

from gpkg_ray import guild_api
from gpkg_ray.results.importance import Importance, importance_line
from gpkg_ray.results.progress import WIDTH, format_value
from gpkg_ray.results.trials import (
    best_trial,
    count_status,
    pareto_front,
    ranked_trials,
)
from gpkg_ray.trial.outcome import TrialOutcome
from gpkg_ray.tuning_spec import Objective, TrialPlan

STATUSES = ("completed", "stopped", "failed")
GAP = "  "


def summary_lines(
    outcomes: list[TrialOutcome],
    objective: Objective,
    searched: list[str],
    top: int = 5,
    plan: TrialPlan | None = None,
) -> list[str]:
    """`searched`: the space keys whose values vary between trials (fixed ones
    are the same in every row). `plan`: with several objectives the Pareto
    front is listed (all of it); with constraints the infeasible are counted."""
    counts = ", ".join(f"{count_status(outcomes, s)} {s}" for s in STATUSES)
    lines = [f"{len(outcomes)} trials: {counts}"]
    if plan is not None and plan.constraints:
        infeasible = sum(
            1 for o in outcomes if o.status == "completed" and not o.feasible
        )
        bounds = ", ".join(c.describe() for c in plan.constraints)
        lines.append(f"{infeasible} infeasible (breaking {bounds}): never the best")
    if plan is not None and plan.more_objectives:
        front = pareto_front(outcomes, plan.objectives)
        if front:
            modes = ", ".join(f"{o.mode} {o.scalar}" for o in plan.objectives)
            lines.append(f"Pareto front ({len(front)} trials, tagged pareto; {modes}):")
            lines += table_lines(*front_table(front, plan.objectives, searched))
        return lines
    ranked = ranked_trials(outcomes, objective)[:top]
    if ranked:
        lines.append(f"Top trials ({objective.mode} {objective.scalar}):")
        lines += table_lines(*top_table(ranked, objective, searched))
    return lines


def top_table(
    ranked: list[TrialOutcome], objective: Objective, searched: list[str]
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: trial, objective, each searched value, step run ids."""
    headers = ["trial", objective.scalar, *searched, "runs"]
    rows = [
        [
            str(o.number),
            f"{o.objective:.6g}",
            *(format_value(o.values.get(key, "")) for key in searched),
            " ".join(run_id[:8] for run_id in o.runs.values()),
        ]
        for o in ranked
    ]
    return headers, rows


def front_table(
    front: list[TrialOutcome], objectives: tuple[Objective, ...], searched: list[str]
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: trial, each objective, each searched value, runs."""
    headers = ["trial", *(o.scalar for o in objectives), *searched, "runs"]
    rows = [
        [
            str(o.number),
            *(f"{v:.6g}" for v in o.objective_values()),
            *(format_value(o.values.get(key, "")) for key in searched),
            " ".join(run_id[:8] for run_id in o.runs.values()),
        ]
        for o in front
    ]
    return headers, rows


def table_lines(
    headers: list[str], rows: list[list[str]], width: int = WIDTH, indent: str = "  "
) -> list[str]:
    """Aligned columns; the trial number is right-aligned. Value columns that
    would pass `width` are left out, and a last line says how many."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    first, values, last = [0], list(range(1, len(headers) - 1)), [len(headers) - 1]
    kept = list(values)

    def total(columns: list[int]) -> int:
        return (
            len(indent)
            + sum(widths[i] for i in columns)
            + len(GAP) * (len(columns) - 1)
        )

    while kept[1:] and total(first + kept + last) > width:
        kept.pop()  # the objective (first value column) always stays
    columns = first + kept + last
    lines = [
        indent + GAP.join(_cell(row, i, widths) for i in columns).rstrip()
        for row in [headers, *rows]
    ]
    dropped = len(values) - len(kept)
    if dropped:
        lines.append(f"{indent}({dropped} more values in trials.csv)")
    return lines


def _cell(row: list[str], i: int, widths: list[int]) -> str:
    return row[i].rjust(widths[i]) if i == 0 else row[i].ljust(widths[i])


def best_commands(best: TrialOutcome | None, plan: TrialPlan) -> list[str]:
    """The `guild run` lines that run the best trial's steps again with its
    values, one per step (see best_command_tokens)."""
    return [" ".join(tokens) for tokens in best_command_tokens(best, plan)]


def best_command_tokens(best: TrialOutcome | None, plan: TrialPlan) -> list[list[str]]:
    """The `guild run` commands that run the best trial's steps again with its
    values, one per step, each token quoted for the shell. A step that takes
    an earlier step's run (`operation:train`) is given the latest run of that
    op, the one the command before made (`$(guild select -o train)`): Guild's
    own choice would be a marked run first."""
    if best is None:
        return []
    commands = []
    for step in plan.steps:
        flags = plan.step_flags(step.name, best.values)
        # Dependency flags (a run from outside the trial) are no op flags.
        known = {*step.flagdefs, *step.requires, *step.pins}
        forced = any(name not in known for name in flags)
        tokens = ["guild", "run"]
        if forced:  # a value the command line gave with --force-flags
            tokens.append("--force-flags")
        tokens.append(shlex.quote(step.opspec))
        tokens += [
            shlex.quote(f"{name}={guild_api.encode_flag_val(value)}")
            for name, value in flags.items()
        ]
        for flag, earlier in step.pins.items():
            opspec = next(s.opspec for s in plan.steps if s.name == earlier)
            # Unquoted: the shell runs `guild select` for the run id.
            tokens.append(
                f"{shlex.quote(flag)}=$(guild select -o {shlex.quote(opspec)})"
            )
        commands.append(tokens)
    return commands


def shell_lines(tokens: list[str], width: int, indent: str = "  ") -> list[str]:
    """A command as lines of at most `width` columns where its tokens allow,
    continued with a backslash, so that it pastes into a shell as one."""
    lines: list[str] = []
    line = indent + tokens[0]
    for token in tokens[1:]:
        if len(line) + 1 + len(token) + 2 > width:  # 2: room for " \\"
            lines.append(line + " \\")
            line = indent + "  " + token
        else:
            line += " " + token
    return [*lines, line]


def closing_lines(
    outcomes: list[TrialOutcome], plan: TrialPlan, importance: Importance
) -> list[str]:
    """What the summary ends with: which values mattered, and the commands
    that run the best trial again."""
    lines = []
    if importance.values or len(plan.searched) >= 2:  # none of one value: no news
        lines = textwrap.wrap(
            importance_line(importance), WIDTH, subsequent_indent="  "
        )
    best = best_trial(outcomes, plan.objective)
    commands = best_command_tokens(best, plan)
    if commands:
        lines.append(f"Best trial {best.number} again:")
        for tokens in commands:
            lines += shell_lines(tokens, WIDTH)
    return lines
