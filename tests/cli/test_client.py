"""The HTTP client on its own: headers, the one error type, connection failures, and the exit
code each error maps to (decisions as data)."""

from __future__ import annotations

import httpx
import pytest

from codeb.cli.session import exit_code_for
from codeb.client.http import ApiError, CodebClient, ConnectionFailed
from tests.cli.fake_api import FakeApi
from tests.support import free_port


def test_headers_and_ipv6_paths():
    fake = FakeApi().on("GET", "/api/servers/2001:db8::1", (200, {"name": "db1"}))
    assert fake.client().get_server("2001:db8::1") == {"name": "db1"}
    (request,) = fake.requests
    assert request.headers["X-API-Key"] == "cb_secret"
    assert request.headers["X-Codeb-Client"] == "cli"
    assert request.headers["User-Agent"].startswith("codeb-cli/")
    mcp = CodebClient("http://x", "k", client="mcp", transport=httpx.MockTransport(fake.handle))
    mcp.get_server("2001:db8::1")
    assert fake.requests[-1].headers["X-Codeb-Client"] == "mcp"
    with pytest.raises(ValueError):
        CodebClient("http://x", "k", client="browser")
    assert "cb_secret" not in repr(fake.client())


def test_error_shapes():
    fake = FakeApi()
    fake.on(
        "GET",
        "/api/projects/x",
        (404, {"error": {"code": "not_found", "message": "gone", "details": {"project": "x"}}}),
    )
    with pytest.raises(ApiError) as caught:
        fake.client().get_project("x")
    err = caught.value
    assert (err.status, err.code, err.message, err.details) == (
        404,
        "not_found",
        "gone",
        {"project": "x"},
    )
    assert err.body() == {
        "error": {"code": "not_found", "message": "gone", "details": {"project": "x"}}
    }

    def bad_gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    client = CodebClient("http://x", "k", transport=httpx.MockTransport(bad_gateway))
    with pytest.raises(ApiError) as caught:
        client.health()
    assert (caught.value.status, caught.value.code) == (502, "http_error")


def test_connection_failure_is_an_api_error_with_status_0():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed) as caught:
        CodebClient(url, "cb_secret").health()
    assert caught.value.status == 0 and url in caught.value.message
    assert "cb_secret" not in str(caught.value) + repr(caught.value)


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (0, "connection_failed", 5),
        (500, "internal_error", 5),
        (503, "service_unavailable", 5),
        (401, "unauthorized", 4),
        (403, "forbidden", 4),
        (403, "protection_refused", 3),
        (422, "typed_name_mismatch", 3),
        (404, "confirm_token_unknown", 3),
        (409, "protection_entry_closed", 3),
        (410, "protection_entry_expired", 3),
        (409, "already_queued", 3),
        (409, "plan_changed", 3),
        (400, "bad_request", 2),
        (404, "not_found", 2),
        (409, "conflict", 2),
        (422, "validation_failed", 2),
    ],
)
def test_exit_code_table(status, code, exit_code):
    assert exit_code_for(ApiError(status, code, "m")) == exit_code
