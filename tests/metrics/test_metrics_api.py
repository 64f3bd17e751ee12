"""GET /api/metrics over real HTTP: the exposition Prometheus scrapes (with its Bearer
header), the JSON summary, who may read it, and `codeb metrics`."""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from codeb.cli import main


def parse(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def requests_of(got, method: str, route: str, status: int) -> float:
    labels = (("method", method), ("route", route), ("status", str(status)))
    return got.get(("codeb_http_requests_total", labels), 0)


def test_prometheus_scrape_with_a_readonly_bearer_key(api):
    reader = api.new_key("prometheus", "readonly")
    with api.client() as c:
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
        assert c.get("/api/projects/shop").status_code == 200
        assert c.get("/api/projects/nope").status_code == 404
        assert c.get("/api/projects", params={"limit": "x"}).status_code == 422
        assert c.get("/api/no/such/route").status_code == 404
    # As Prometheus sends it: Authorization: Bearer, no X-API-Key.
    r = httpx.get(
        f"{api.base_url}/api/metrics",
        headers={"Authorization": f"Bearer {reader}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    got = parse(r.text)
    # By route template, never by raw path; errors count with their status.
    assert requests_of(got, "GET", "/api/projects/{project}", 200) == 1
    assert requests_of(got, "GET", "/api/projects/{project}", 404) == 1
    assert requests_of(got, "GET", "/api/projects", 422) == 1
    assert requests_of(got, "POST", "/api/projects", 201) == 1
    assert requests_of(got, "GET", "(unmatched)", 404) == 1
    assert not any("nope" in str(labels) for (_, labels) in got)
    latency = got[
        (
            "codeb_http_request_duration_seconds_count",
            (("method", "GET"), ("route", "/api/projects/{project}")),
        )
    ]
    assert latency == 2
    for family in (
        "codeb_runner_operations",
        "codeb_metrics_collector_up",
        "codeb_scheduler_job_next_run_timestamp_seconds",
        "process_resident_memory_bytes",
    ):
        assert any(name == family for (name, _) in got), family
    # The second scrape sees the first one.
    again = parse(
        httpx.get(f"{api.base_url}/api/metrics", headers={"X-API-Key": reader}, timeout=30).text
    )
    assert requests_of(again, "GET", "/api/metrics", 200) >= 1


def test_who_may_read(api):
    url = f"{api.base_url}/api/metrics"
    for headers in ({}, {"Authorization": "Bearer cb_wrong"}, {"X-API-Key": "cb_wrong"},
                    {"Authorization": "Basic Zm9vOmJhcg=="}):  # fmt: skip
        r = httpx.get(url, headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
    revoked = api.new_key("old", "readonly")
    with api.client() as c:
        c.delete("/api/keys/old")
    r = httpx.get(url, headers={"Authorization": f"Bearer {revoked}"}, timeout=30)
    assert r.status_code == 401
    for role in ("agent", "operator"):
        key = api.new_key(f"k-{role}", role)
        assert httpx.get(url, headers={"X-API-Key": key}, timeout=30).status_code == 200


def test_json_summary_and_bad_format(api):
    reader = api.new_key("reader", "readonly")
    with api.client(reader) as c:
        r = c.get("/api/metrics", params={"format": "json"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body["overview"]) >= {"http_requests", "operations", "runner", "servers"}
        assert body["overview"]["runner"] == {"queued": 0, "running": 0}
        assert "codeb_http_requests" in body["metrics"]
        r = c.get("/api/metrics", params={"format": "xml"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_failed"


def test_codeb_metrics_command(api, capsys, monkeypatch):
    reader = api.new_key("reader", "readonly")
    monkeypatch.setenv("CODEB_URL", api.base_url)
    monkeypatch.setenv("CODEB_API_KEY", reader)
    monkeypatch.setenv("CODEB_CLI_CONFIG", "/nonexistent")
    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    assert "http requests:" in out and "protection queue pending:" in out
    assert main(["metrics", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["overview"]["servers"] == {"total": 0, "unreachable": []}
    assert main(["metrics", "--all"]) == 0
    assert "codeb_runner_operations" in capsys.readouterr().out
    monkeypatch.setenv("CODEB_API_KEY", "cb_wrong")
    assert main(["metrics"]) == 4


def test_no_client_can_grow_the_series_without_bound(api):
    """Every label of the request metrics has a bounded set of values whatever is sent: 50
    invented methods and 50 invented paths, unauthenticated, add at most two series each
    (route template or "(unmatched)"), with the methods counted as "(other)"."""
    reader = api.new_key("prometheus", "readonly")
    with httpx.Client(base_url=api.base_url, timeout=30) as c:
        for n in range(50):
            for path in ("/api/projects", f"/api/invented-{n}"):
                r = c.request(f"X-INVENTED-{n}", path)
                assert r.status_code in (400, 404, 405), (n, path, r.status_code)
    got = parse(
        httpx.get(f"{api.base_url}/api/metrics", headers={"X-API-Key": reader}, timeout=30).text
    )
    methods = {dict(labels)["method"] for (name, labels) in got
               if name == "codeb_http_requests_total"}  # fmt: skip
    assert not any("INVENTED" in m for m in methods), methods
    counted = [(dict(labels), value) for (name, labels), value in got.items()
               if name == "codeb_http_requests_total"]  # fmt: skip
    other = {(lab["route"], lab["status"]): v for lab, v in counted if lab["method"] == "(other)"}
    assert sum(other.values()) == 100, other
    assert {route for route, _ in other} <= {"/api/projects", "(unmatched)"}, other
    assert not any("invented" in str(labels) for (_, labels) in got)
