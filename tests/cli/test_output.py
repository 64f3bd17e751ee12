"""Rendering: aligned tables, colour only on a terminal, Ansible diffs, preview titles."""

from __future__ import annotations

import io

from codeb.cli.containers import change_title
from codeb.cli.output import Output, diff_lines, duration, table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_table_aligns_and_formats_cells():
    rows = [{"a": "x", "b": None, "c": ["p", "q"]}, {"a": "longer", "b": True, "c": []}]
    text = table(rows, [("A", "a"), ("B", "b"), ("C", "c")])
    assert text.splitlines() == ["A       B    C", "x       -    p, q", "longer  yes  -"]
    assert table([], [("A", "a")]) == "(none)"


def test_duration():
    assert [duration(s) for s in (None, 5, 65, 86400)] == ["-", "5s", "1m 05s", "24h 00m"]


def test_colour_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Output()
    diff = "--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new"
    assert diff_lines(diff, out) == diff.splitlines()  # captured stdout is not a terminal
    monkeypatch.setattr("sys.stdout", Terminal())
    coloured = diff_lines(diff, out)
    assert coloured[3] == "\033[31m-old\033[0m" and coloured[4] == "\033[32m+new\033[0m"
    monkeypatch.setenv("NO_COLOR", "1")
    assert diff_lines(diff, out) == diff.splitlines()


def test_ansible_diffs_and_preview_titles():
    out = Output()
    diff = [{"before": "Image=a\n", "after": "Image=b\n", "before_header": "/u.container",
             "after_header": "/u.container"}]  # fmt: skip
    assert diff_lines(diff, out) == [
        "--- /u.container", "+++ /u.container", "@@ -1 +1 @@", "-Image=a", "+Image=b",
    ]  # fmt: skip
    assert diff_lines({"prepared": "+added"}, out) == ["+added"]
    assert change_title({"host": "app1", "task": "Place units", "item": "x.container"}) == (
        "[app1] TASK Place units (x.container)"
    )
    assert change_title({"host": "app1", "action": "update", "path": "/etc/x"}) == (
        "[app1] update /etc/x"
    )
