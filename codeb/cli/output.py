"""How the CLI writes: aligned tables and key/value blocks for people, raw API JSON for scripts.

In `--json` mode stdout carries exactly one JSON document (the API's answer) and everything
meant for a person (progress, prompts, hints) goes to stderr. Colour only on a terminal, and
never with NO_COLOR set."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

Column = tuple[str, str | Callable[[Mapping[str, Any]], Any]]

STYLES = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
    "bold": "1",
    "dim": "2",
}


def wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Output:
    """Where and how the CLI writes; streams are looked up at write time (tests swap them)."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode

    @property
    def human(self) -> TextIO:
        return sys.stderr if self.json_mode else sys.stdout

    def say(self, text: str = "") -> None:
        print(text, file=self.human, flush=True)

    def warn(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def data(self, body: Any) -> None:
        """The one JSON document of --json mode."""
        print(json.dumps(body, indent=2, sort_keys=False), flush=True)

    def paint(self, text: str, style: str, stream: TextIO | None = None) -> str:
        if not wants_colour(stream or self.human):
            return text
        return f"\033[{STYLES[style]}m{text}\033[0m"


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Aligned columns with a header row; `(none)` for no rows."""
    grid = [[header for header, _ in columns]]
    for row in rows:
        grid.append([cell(get(row) if callable(get) else row.get(get)) for _, get in columns])
    if len(grid) == 1:
        return "(none)"
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in grid]
    return "\n".join(line.rstrip() for line in lines)


def pairs(items: Iterable[tuple[str, Any]]) -> str:
    """A key/value block (what `show` commands print)."""
    items = list(items)
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {cell(v)}" for k, v in items)


def duration(seconds: float | int | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def diff_lines(diff: Any, out: Output) -> list[str]:
    """A unified diff (a string, or Ansible's before/after dicts), coloured on a terminal."""
    if isinstance(diff, list):
        return [line for part in diff for line in diff_lines(part, out)]
    if isinstance(diff, dict):
        if "prepared" in diff:
            text = str(diff["prepared"])
        else:
            text = _unified(
                str(diff.get("before", "")),
                str(diff.get("after", "")),
                str(diff.get("before_header", "before")),
                str(diff.get("after_header", "after")),
            )
    else:
        text = str(diff or "")
    lines = []
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            lines.append(out.paint(line, "bold"))
        elif line.startswith("+"):
            lines.append(out.paint(line, "green"))
        elif line.startswith("-"):
            lines.append(out.paint(line, "red"))
        elif line.startswith("@@"):
            lines.append(out.paint(line, "cyan"))
        else:
            lines.append(line)
    return lines


def _unified(before: str, after: str, old: str, new: str) -> str:
    import difflib

    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), old, new, lineterm="")
    return "\n".join(lines)
