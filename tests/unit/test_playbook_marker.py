"""Every play that acts on hosts carries the run's marker in its environment: a cancel finds a
run's remote processes by it (roles/codeb_cancel), so a play without it could not be stopped.
The marker itself is defined once, in playbooks/group_vars/all.yml."""

from __future__ import annotations

from pathlib import Path

import yaml

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
# The cancel play itself runs unmarked, so it never matches (and stops) itself.
UNMARKED = {"cancel.yml"}


def test_every_play_sets_the_marker():
    checked = 0
    for path in sorted(PLAYBOOKS.glob("*.yml")):
        if path.name in UNMARKED:
            continue
        for play in yaml.safe_load(path.read_text()):
            assert play.get("environment") == "{{ codeb_run_environment }}", (path.name, play)
            checked += 1
    assert checked >= 6


def test_the_marker_is_defined_once():
    shared = yaml.safe_load((PLAYBOOKS / "group_vars" / "all.yml").read_text())
    assert "CODEB_OPERATION_ID" in shared["codeb_run_environment"]
    for path in PLAYBOOKS.glob("*.yml"):
        assert "CODEB_OPERATION_ID:" not in path.read_text(), path.name
