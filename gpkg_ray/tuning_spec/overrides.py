"""Space entries set for one tune on the command line, over the config's `space`.

    guild run tune space='lr=0.1 train:epochs=3 dropout=uniform[0:0.3]'
    guild run tune --force-flags train:epochs=3

The `space` flag is one string of KEY=VALUE items, keys and values written as
in the config's `space`. Guild sees one plain string (the flag's type is
`string` and the value starts with a key), so a list or a range in it does not
start a Guild batch, as `lr=[0.1,0.2]` or `lr=uniform[0:1]` given as flags of
their own would. A step's flag given with `--force-flags` (what Guild suggests
for a flag the tune op does not define) sets a fixed value the same way: it
must name a step's flag, as every override must, and is never ignored.

This module reads what was given; `plan` merges it into the space.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from gpkg_ray.errors import SpecError

SPACE_FLAG = "space"
"""The tune op's flag that holds space entries (Settings.space)."""

Origin = Literal["space", "force-flags"]

_HOW_TO = "write space='KEY=VALUE ...', e.g. space='lr=0.1 train:epochs=3'"


@dataclass(frozen=True)
class Override:
    key: str
    """A space key: a flag (`lr`) or a step's flag (`train:epochs`)."""
    value: Any
    """Text of an item of the `space` flag, or a value Guild decoded."""
    origin: Origin
    """`space` (the flag) or `force-flags` (a step flag of its own)."""

    def where(self) -> str:
        """Where it was given, as error messages name it."""
        if self.origin == "space":
            return "flag space"
        return f"flag '{self.key}' (--force-flags)"


def space_flag_overrides(text: str | None) -> list[Override]:
    """The items of the `space` flag's value, in order; raises SpecError for
    an item that is not KEY=VALUE or a key given twice."""
    overrides: list[Override] = []
    for item in _items(text or ""):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise SpecError(f"flag space: '{item}' is not KEY=VALUE: {_HOW_TO}")
        if not value:
            raise SpecError(
                f"flag space: '{item}' has no value: give a value, a list or a "
                "range, e.g. lr=0.1, lr=[0.1,0.2] or lr=loguniform[1e-4:1e-1]"
            )
        if _has_outside(value, "="):
            raise SpecError(
                f"flag space: the value of '{key}' holds an '=' ({value}): "
                f"separate items with spaces: {_HOW_TO}"
            )
        if any(o.key == key for o in overrides):
            raise SpecError(f"flag space: '{key}' is given twice: give it once")
        # `~` asks for the flag's own choices or min/max, as in the config.
        overrides.append(Override(key, None if value == "~" else value, "space"))
    return overrides


def forced_overrides(flags: dict[str, Any], declared: Iterable[str]) -> list[Override]:
    """Flags of the tune run that the tune op does not define (`--force-flags`):
    each is a step's flag given a fixed value."""
    declared = set(declared)
    overrides = []
    for name, value in flags.items():
        if name in declared:
            continue
        if value is None or value == "":
            raise SpecError(
                f"flag '{name}' (--force-flags) has no value: give one, e.g. "
                f"{name}=VALUE, or drop it"
            )
        overrides.append(Override(name, value, "force-flags"))
    return overrides


def _items(text: str) -> list[str]:
    """`text` split at spaces that are outside brackets and quotes, so that
    `batch-size=[16, 32]` is one item."""
    items, current = [], ""
    for char, outside in zip(text, _outside(text), strict=True):
        if char.isspace() and outside:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item for item in items if item]


def _has_outside(text: str, wanted: str) -> bool:
    """Whether `wanted` is in `text` outside brackets and quotes."""
    return any(c == wanted and out for c, out in zip(text, _outside(text), strict=True))


def _outside(text: str) -> list[bool]:
    """For each character of `text`: whether it is outside brackets and quotes."""
    result, depth, quote = [], 0, ""
    for char in text:
        result.append(not quote and depth == 0)
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)
    return result
