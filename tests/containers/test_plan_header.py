"""A malformed X-Plan-Hash is bad input (422), refused before any host is read."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("value", ["nope", "A" * 64, "0" * 63, "0" * 64 + "0"])
def test_a_malformed_plan_hash_is_refused(sqlite_api, value):
    with sqlite_api.client() as c:
        r = c.post("/api/projects", json={"name": "planned", "type": "nodejs"})
        assert r.status_code == 201, r.text
        r = c.post(
            "/api/containers/deploy",
            json={"project": "planned", "environment": "staging", "image": "x/app:1"},
            headers={"X-Plan-Hash": value},
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"] == {"field": "X-Plan-Hash"}
        ops = c.get("/api/operations").json()
        assert ops["total"] == 0
