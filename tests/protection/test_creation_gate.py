"""Creations go through the same gate: configuration can make them stricter."""

import pytest

from tests.protection.helpers import confirm, log_statuses
from tests.support import live_api


@pytest.fixture
def strict_api(tmp_path, clock):
    rules = {"project_create": {"level": "MEDIUM"}, "environment_create": {"level": "MEDIUM"}}
    with live_api(tmp_path / "data", clock=clock, protection_rules=rules) as live:
        yield live


def test_stricter_creation_needs_a_confirmation(strict_api):
    with strict_api.client() as c:
        r = c.post("/api/projects", json={"name": "careful"})
        assert r.status_code == 202 and r.json()["status"] == "confirmation_required", r.text
        assert c.get("/api/projects/careful").status_code == 404
        r = confirm(c, r.json()["confirm_token"])
        assert r.status_code == 200, r.text
        assert set(r.json()["result"]["env_files"]) == {"local", "staging", "production"}
        assert c.get("/api/projects/careful").json()["status"] == "active"
        r = c.post("/api/projects/careful/environments", json={"name": "preview"})
        assert r.status_code == 202
        assert c.get("/api/projects/careful/environments/preview").status_code == 404
    assert log_statuses(strict_api, "project_create") == [
        "requested",
        "token_issued",
        "confirmed",
        "executed",
    ]


def test_default_creation_runs_at_once_and_is_logged(papi):
    with papi.client() as c:
        assert c.post("/api/projects", json={"name": "quick"}).status_code == 201
    assert log_statuses(papi, "project_create") == ["executed"]
