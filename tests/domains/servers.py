"""Real PowerDNS Authoritative (gsqlite3) and Caddy, started on loopback with free ports for
the contract tests, stopped by their PIDs (never by name)."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import free_port

PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_http(url: str, proc: subprocess.Popen, what: str, headers: dict | None = None) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, headers=headers or {}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {url}")


@dataclass
class Pdns:
    api_url: str
    api_key: str
    dns_port: int
    pid: int
    log: Path


@contextmanager
def powerdns(work: Path) -> Iterator[Pdns]:
    work.mkdir(parents=True, exist_ok=True)
    db = work / "pdns.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(PDNS_SCHEMA.read_text())
    key = secrets.token_urlsafe(24)
    dns_port, api_port = free_port(), free_port()
    (work / "pdns.conf").write_text(
        "\n".join(
            [
                "launch=gsqlite3",
                f"gsqlite3-database={db}",
                "local-address=127.0.0.1",
                f"local-port={dns_port}",
                f"socket-dir={work}",
                "daemon=no",
                "guardian=no",
                "disable-syslog=yes",
                "security-poll-suffix=",
                "api=yes",
                f"api-key={key}",
                "webserver=yes",
                "webserver-address=127.0.0.1",
                f"webserver-port={api_port}",
                "webserver-allow-from=127.0.0.1,::1",
                "",
            ]
        )
    )
    (work / "pdns.conf").chmod(0o600)
    log = work / "pdns.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["/usr/sbin/pdns_server", f"--config-dir={work}"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{api_port}"
        _wait_http(f"{url}/api/v1/servers", proc, "pdns_server")
        yield Pdns(url, key, dns_port, proc.pid, log)
    finally:
        _stop(proc)


@dataclass
class Caddy:
    admin: str  # 127.0.0.1:port
    http_port: int
    https_port: int
    config: Path  # the Caddyfile it runs
    env: dict[str, str]
    pid: int
    home: Path

    @property
    def root_ca(self) -> Path:
        return self.home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"


@contextmanager
def caddy(work: Path) -> Iterator[Caddy]:
    """Caddy with its own HOME/XDG dirs, free ports and no site yet (tests reload it)."""
    work.mkdir(parents=True, exist_ok=True)
    admin, http_port, https_port = f"127.0.0.1:{free_port()}", free_port(), free_port()
    env = {
        **os.environ,
        "HOME": str(work),
        "XDG_DATA_HOME": str(work / "data"),
        "XDG_CONFIG_HOME": str(work / "config"),
    }
    config = work / "Caddyfile"
    config.write_text(
        "{\n"
        f"\tadmin {admin}\n\thttp_port {http_port}\n\thttps_port {https_port}\n"
        "\tlocal_certs\n\tskip_install_trust\n}\n"
    )
    log = work / "caddy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_http(f"http://{admin}/config/", proc, "caddy")
        yield Caddy(admin, http_port, https_port, config, env, proc.pid, work)
    finally:
        _stop(proc)
