"""The pure parts of roles/codeb_quadlet/module_utils/codeb_quadlet.py: what the one-step
apply hands to `apply` after its own probe must be exactly what the role's two steps select
between the probe task and the apply task (tasks/main.yml). The module's host side runs on
the fleet (tests/deploy/test_deploy_fleet.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location(
    "codeb_quadlet_utils", ROOT / "roles/codeb_quadlet/module_utils/codeb_quadlet.py"
)
assert _SPEC and _SPEC.loader
cq = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(cq)

PLAN = {
    "dirs": [{"path": "/etc/codeb/env", "mode": "0700"}, {"path": "/srv/a", "mode": "0755"}],
    "files": [
        {"path": "/etc/containers/systemd/a.container", "content": "A", "mode": "0644",
         "unit": "a.container"},
        {"path": "/etc/containers/systemd/b.container", "content": "B", "mode": "0644",
         "unit": "b.container"},
    ],
    "secret_files": [
        {"path": "/etc/codeb/env/a.env", "mode": "0600", "unit": "a.container"},
        {"path": "/etc/codeb/env/b.env", "mode": "0600", "unit": "b.container"},
    ],
    "secret_contents": ["secret-a", "secret-b"],
    "services": ["a.service", "b.service"],
}  # fmt: skip
NOTHING = {
    "dirs": [], "files": [], "restart": [], "reload": False, "inactive": [], "not_loaded": [],
}  # fmt: skip


def test_only_what_the_probe_found_different_is_handed_on():
    seen = {
        **NOTHING,
        "dirs": ["/srv/a"],
        "files": ["/etc/containers/systemd/b.container", "/etc/codeb/env/b.env"],
        "restart": ["a.service"],
        "reload": True,
        "not_loaded": ["b.service"],
    }
    got = cq.what_differs(PLAN, seen)
    assert got["dirs"] == [{"path": "/srv/a", "mode": "0755"}]
    assert [f["path"] for f in got["files"]] == ["/etc/containers/systemd/b.container"]
    # A secret file and its content stay paired.
    assert got["secret_files"] == [PLAN["secret_files"][1]]
    assert got["secret_contents"] == ["secret-b"]
    assert got["services"] == PLAN["services"]
    assert (got["restart"], got["reload"], got["inactive"], got["not_loaded"]) == (
        ["a.service"], True, [], ["b.service"],
    )  # fmt: skip


def test_the_apply_runs_when_the_roles_condition_says_so():
    # tasks/main.yml: reload or (dirs + files + restart + inactive) | length > 0
    assert not cq.differs(NOTHING)
    assert not cq.differs({**NOTHING, "not_loaded": ["a.service"]})
    for key, value in (
        ("reload", True),
        ("dirs", ["/srv/a"]),
        ("files", ["/etc/codeb/env/a.env"]),
        ("restart", ["a.service"]),
        ("inactive", ["b.service"]),
    ):
        assert cq.differs({**NOTHING, key: value}), key


def test_nothing_different_hands_on_nothing_to_place():
    got = cq.what_differs(PLAN, NOTHING)
    assert got["dirs"] == got["files"] == got["secret_files"] == got["secret_contents"] == []
