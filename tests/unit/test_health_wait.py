"""codeb.services.health.wait_for_health against a real HTTP server on loopback: the one wait
every job uses for an app's /health (deploy, restore, placed replica)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from codeb.services.health import wait_for_health


class Run:
    """What the wait reads of a RunContext: the cancel flag."""

    def __init__(self) -> None:
        self.cancel = threading.Event()

    @property
    def canceled(self) -> bool:
        return self.cancel.is_set()


@pytest.fixture
def app():
    answers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = answers.pop(0) if answers else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health", answers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_waits_through_unhealthy_answers_until_200(app):
    url, answers = app
    answers.extend([503, 503, 500])
    assert wait_for_health(url, Run(), deadline_s=10, poll_s=0.01, try_timeout_s=2) == 200
    assert answers == []  # every unhealthy answer was asked for


def test_the_last_status_when_the_deadline_passes(app):
    url, answers = app
    answers.extend([503] * 1000)
    started = time.monotonic()
    assert wait_for_health(url, Run(), deadline_s=0.3, poll_s=0.02, try_timeout_s=1) == 503
    assert time.monotonic() - started < 5


def test_none_when_nothing_answers():
    # A port nothing listens on (bound, never listening): connection refused every time.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/health"
        assert wait_for_health(url, Run(), deadline_s=0.3, poll_s=0.05, try_timeout_s=0.2) is None


def test_a_cancel_ends_the_wait_at_once(app):
    url, answers = app
    answers.extend([503] * 1000)
    run = Run()
    threading.Timer(0.2, run.cancel.set).start()
    started = time.monotonic()
    assert wait_for_health(url, run, deadline_s=60, poll_s=5, try_timeout_s=1) == 503
    assert time.monotonic() - started < 2
