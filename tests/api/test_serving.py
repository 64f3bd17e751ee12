"""`codeb serve`'s waitress settings (codeb.cli.serving): with send_bytes at 64 KiB a response
leaves in one send() made by waitress's main loop once it is answered. Every answer must still
arrive whole and at once (not after the main loop's poll timeout), small or larger than 64 KiB,
one after another on a kept-alive connection and from many clients at a time. codeb's own app
is served here with exactly the settings `codeb serve` uses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import waitress

from codeb.app import create_app
from codeb.cli import serving
from codeb.features.projects import service as projects
from codeb.services.context import SYSTEM
from tests.support import in_thread, live_api

# waitress marks send_bytes as deprecated (codeb.cli.serving keeps serving without it).
pytestmark = pytest.mark.filterwarnings("ignore:send_bytes:DeprecationWarning")

# waitress's main loop polls with this timeout (its default): an answer that waited for the
# loop to wake by itself would take about this long.
LOOP_TIMEOUT_S = 1.0


@contextmanager
def served(app: object, threads: int = 4) -> Iterator[str]:
    """`app` under waitress with codeb's settings on a loopback port; yields the base URL."""
    options = serving.waitress_options(threads, "codeb-test")
    server = waitress.create_server(
        app, host="127.0.0.1", port=0, asyncore_loop_timeout=int(LOOP_TIMEOUT_S), **options
    )
    with in_thread(server, "waitress-serving-test"):
        yield f"http://127.0.0.1:{server.effective_port}"  # type: ignore[union-attr]


def sized_app(environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Answers /N with N bytes (a pattern, so a lost or repeated chunk shows)."""
    size = int(environ["PATH_INFO"].strip("/") or 0)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [expected(size)]


PATTERN = bytes(range(251))


def expected(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def test_the_options_are_waitress_s_and_carry_send_bytes():
    options = serving.waitress_options(8)
    assert options == {"threads": 8, "ident": "codeb", "send_bytes": serving.SEND_BYTES}
    from waitress.adjustments import Adjustments

    adj = Adjustments(**options)
    assert adj.send_bytes == serving.SEND_BYTES and adj.threads == 8


def test_answers_of_every_size_arrive_whole_and_at_once():
    sizes = [0, 1, 100, 39_000, serving.SEND_BYTES - 1, serving.SEND_BYTES,
             serving.SEND_BYTES + 1, 3 * serving.SEND_BYTES + 7, 2_000_000]  # fmt: skip
    with served(sized_app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for size in sizes * 2:  # one kept-alive connection, every size twice
            started = time.monotonic()
            r = client.get(f"/{size}")
            took = time.monotonic() - started
            assert r.status_code == 200
            assert r.content == expected(size), size
            assert int(r.headers["Content-Length"]) == size
            # Sent when answered, not when the main loop next wakes by itself.
            assert took < LOOP_TIMEOUT_S / 2, (size, took)


def test_many_clients_at_a_time_get_whole_answers():
    sizes = [10, 39_000, 70_000, 300_000]

    def client_run(n: int) -> list[tuple[int, bool]]:
        out = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(12):
                size = sizes[(n + i) % len(sizes)]
                r = client.get(f"/{size}")
                out.append((r.status_code, r.content == expected(size)))
        return out

    with served(sized_app, threads=4) as url, ThreadPoolExecutor(16) as pool:
        results = [x for run in pool.map(client_run, range(16)) for x in run]
    assert results == [(200, True)] * (16 * 12)


def test_codeb_answers_whole_under_serve_settings(tmp_path: Path):
    with live_api(tmp_path / "data") as live:
        with live.deps.db.connection_context():
            for i in range(10):
                projects.create_project(live.deps, SYSTEM, {"name": f"serve-{i:03d}"})
        headers = {"X-API-Key": live.admin_key}
        with (
            served(create_app(live.deps)) as url,
            httpx.Client(base_url=url, headers=headers, timeout=30) as client,
        ):
            ids = set()
            for limit in (1, 5, 10, 5):
                started = time.monotonic()
                r = client.get("/api/projects", params={"limit": limit})
                assert time.monotonic() - started < LOOP_TIMEOUT_S / 2
                assert r.status_code == 200
                page = json.loads(r.content)
                assert len(page["projects"]) == limit and page["total"] == 10
                ids.add(r.headers["X-Request-Id"])
            assert len(ids) == 4  # each answer its own request id
            # Larger than send_bytes: the OpenAPI document.
            r = client.get("/api/openapi.json")
            assert r.status_code == 200 and len(r.content) > serving.SEND_BYTES
            assert json.loads(r.content)["paths"]
            # A refusal arrives whole too.
            r = client.get("/api/projects", headers={"X-API-Key": "cb_wrong"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
