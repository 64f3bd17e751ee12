"""The Caddy side against a real Caddy 2.6 on loopback: the rendered Caddyfile serves HTTPS
(tls internal) in front of an upstream, a file Caddy refuses leaves the old one serving with
Caddy's message, and the running config read back names every site."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator

import pytest

from codeb.config import REPO_ROOT
from codeb.providers.proxy import (
    CaddyOptions,
    LocalCaddy,
    ProxyConfigRejected,
    Site,
    caddyfile_diff,
    hosts_in_config,
    render_caddyfile,
)
from codeb.providers.proxy.caddy import issuance_errors, upstream
from codeb.providers.proxy.probe import http_get, tls_certificate
from tests.domains.servers import Caddy, caddy
from tests.support import free_port

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
TEMPLATES = REPO_ROOT / "templates"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"app ok\n" if self.path == "/health" else b"app page\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Caddy]:
    with caddy(tmp_path_factory.mktemp("caddy")) as running:
        yield running


def options(c: Caddy) -> CaddyOptions:
    return CaddyOptions(
        admin=c.admin, tls="internal", http_port=c.http_port, https_port=c.https_port,
        health_interval="1s",
    )  # fmt: skip


def test_rendered_config_serves_https_to_the_app(proxy: Caddy, app_port: int) -> None:
    local = LocalCaddy(proxy.config, proxy.admin, proxy.env)
    sites = [
        Site("shop.example.test", "shop", "production", (upstream("127.0.0.1", app_port),)),
        Site("empty.example.test", "blog", "staging"),
    ]
    text = render_caddyfile(TEMPLATES, sites, options(proxy))
    assert local.apply(text) is True
    assert local.apply(text) is False  # unchanged: not reloaded
    running = hosts_in_config(local.running_config())
    assert running["shop.example.test"] == [f"127.0.0.1:{app_port}"]
    assert running["empty.example.test"] == []

    cert = tls_certificate(
        "127.0.0.1", proxy.https_port, "shop.example.test", cafile=str(proxy.root_ca)
    )
    assert cert.trusted and "shop.example.test" in cert.names
    assert "Caddy Local Authority" in cert.issuer
    answer = http_get(
        "127.0.0.1", proxy.https_port, "shop.example.test", "/health",
        cafile=str(proxy.root_ca), verify=True,
    )  # fmt: skip
    assert answer.status == 200 and answer.body == b"app ok\n"
    redirect = http_get("127.0.0.1", proxy.http_port, "shop.example.test", "/", tls=False)
    assert redirect.status in (301, 308) and redirect.location.startswith("https://")
    empty = http_get("127.0.0.1", proxy.https_port, "empty.example.test", "/")
    assert empty.status == 503 and b"no app server is placed for blog/staging" in empty.body


def test_refused_config_leaves_the_old_one_serving(proxy: Caddy, app_port: int) -> None:
    local = LocalCaddy(proxy.config, proxy.admin, proxy.env)
    good = render_caddyfile(
        TEMPLATES,
        [Site("kept.example.test", "shop", "production", (f"127.0.0.1:{app_port}",))],
        options(proxy),
    )
    local.apply(good)
    bad = good + "\nbroken.example.test {\n\treverse_proxy {\n\t\tno_such_option 1\n\t}\n}\n"
    with pytest.raises(ProxyConfigRejected) as refused:
        local.apply(bad)
    assert "no_such_option" in refused.value.message
    assert proxy.config.read_text() == good
    assert "kept.example.test" in hosts_in_config(local.running_config())
    assert http_get("127.0.0.1", proxy.https_port, "kept.example.test", "/health").status == 200
    diff = caddyfile_diff(good, bad)
    assert "+broken.example.test {" in diff


def test_names_and_upstreams_are_checked_again_before_rendering(proxy: Caddy) -> None:
    for site in (
        Site("evil.test\n}", "p", "e"),
        Site("{{x}}.test", "p", "e"),
        Site("ok.test", "p", "e", ("127.0.0.1:80 {",)),
    ):
        with pytest.raises(ValueError):
            render_caddyfile(TEMPLATES, [site], options(proxy))
    with pytest.raises(ValueError):
        render_caddyfile(TEMPLATES, [], CaddyOptions(admin="0.0.0.0:2019", tls="internal"))


def test_last_issuance_error_read_from_caddys_log(tmp_path) -> None:
    """A real Caddy whose CA does not answer: its log says why it has no certificate, and
    issuance_errors reads the name, the message and when (what status reports per proxy)."""
    closed = free_port()  # nothing listens there
    with caddy(tmp_path / "acme-caddy") as c:
        text = (
            "{\n"
            f"\tadmin {c.admin}\n\thttp_port {c.http_port}\n\thttps_port {c.https_port}\n"
            f"\tacme_ca https://127.0.0.1:{closed}/dir\n\temail ops@example.test\n}}\n"
            'acme.example.test {\n\trespond "hi"\n}\n'
        )
        started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        LocalCaddy(c.config, c.admin, c.env).apply(text)
        log = c.home / "caddy.log"
        deadline = time.monotonic() + 30
        errors: dict = {}
        while time.monotonic() < deadline:
            errors = issuance_errors(log.read_text().splitlines())
            if "acme.example.test" in errors:
                break
            time.sleep(0.2)
    error = errors["acme.example.test"]
    assert "connection refused" in error["error"] and f"127.0.0.1:{closed}" in error["error"]
    at = dt.datetime.fromisoformat(error["at"].rstrip("Z"))
    assert started - dt.timedelta(seconds=5) <= at <= started + dt.timedelta(seconds=60)
    # A certificate obtained later clears it; shutdown cancellations are not errors.
    later = error["ts"] + 5
    ok = json.dumps(
        {"level": "info", "ts": later, "logger": "tls.obtain",
         "msg": "certificate obtained successfully", "identifier": "acme.example.test"},
        separators=(",", ":"),  # as Caddy writes them
    )  # fmt: skip
    canceled = json.dumps(
        {"level": "error", "ts": later, "logger": "tls", "msg": "job failed",
         "error": "other.example.test: obtaining certificate: context canceled"},
        separators=(",", ":"),
    )  # fmt: skip
    lines = [*log.read_text().splitlines(), ok, canceled]
    assert issuance_errors(lines) == {}
