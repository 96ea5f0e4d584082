"""Values a step's run writes to a file: `metrics.json:accuracy` in a target.

JSON and YAML: a key of the top mapping, or a dotted path into nested ones
(`metrics.json:val.acc`); CSV: a column of the last row (a log a step appends
to as it trains). Read once the step has ended.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any


class RunFileError(Exception):
    """A file or key a target names is missing, or holds no number: one line
    naming both."""


def read_value(run_dir: str, file: str, key: str) -> float:
    """The number at `key` in `file` of the run in `run_dir`."""
    path = os.path.join(run_dir, file)
    if not os.path.isfile(path):
        raise RunFileError(f"wrote no file {file} (looked for {key} in it)")
    try:
        data = _load(path)
    except Exception as e:  # a malformed file, in whatever format
        raise RunFileError(f"{file} cannot be read ({type(e).__name__}: {e})") from e
    value = _lookup(data, key)
    if value is _MISSING:
        keys = ", ".join(sorted(map(str, data))[:10]) if isinstance(data, dict) else ""
        raise RunFileError(f"{file} has no key '{key}' (keys: {keys or 'none'})")
    try:
        if isinstance(value, bool | dict | list):
            raise ValueError(value)
        # A NaN or infinite value is returned: the objective check fails it.
        return float(value)
    except (TypeError, ValueError):
        raise RunFileError(
            f"{file} key '{key}' holds {value!r}, not a number"
        ) from None


_MISSING = object()


def _load(path: str) -> Any:
    lower = path.lower()
    with open(path, newline="" if lower.endswith(".csv") else None) as f:
        if lower.endswith(".json"):
            return json.load(f)
        if lower.endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(f)
        rows = list(csv.DictReader(f))
        return rows[-1] if rows else {}


def _lookup(data: Any, key: str) -> Any:
    """`key` in `data`: the key as written, else a dotted path."""
    if isinstance(data, dict) and key in data:
        return data[key]
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data
