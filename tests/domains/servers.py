"""Real PowerDNS Authoritative (gsqlite3) and Caddy, started on loopback with free ports for
the contract tests, stopped by their PIDs (never by name)."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import ssl
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
def powerdns(work: Path, address: str = "127.0.0.1") -> Iterator[Pdns]:
    """PowerDNS on `address` (a loopback address: 127.0.0.2 for a second server)."""
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
                f"local-address={address}",
                f"local-port={dns_port}",
                f"socket-dir={work}",
                "daemon=no",
                "guardian=no",
                "disable-syslog=yes",
                "security-poll-suffix=",
                "api=yes",
                f"api-key={key}",
                "webserver=yes",
                f"webserver-address={address}",
                f"webserver-port={api_port}",
                "webserver-allow-from=127.0.0.0/8,::1",
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
        url = f"http://{address}:{api_port}"
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


@dataclass
class Pebble:
    directory: str  # https://127.0.0.1:port/dir
    ca_bundle: Path  # the listener's own certificate (to trust the directory)
    management: str  # https://127.0.0.1:port (roots of the certificates it issues)
    pid: int
    log: Path

    def issuing_root(self) -> str:
        """The root Pebble signs with (new on every start)."""
        trust = ssl.create_default_context(cafile=str(self.ca_bundle))
        return httpx.get(f"{self.management}/roots/0", verify=trust).text


def _self_signed(work: Path) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test listener")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = work / "listener.crt", work / "listener.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@contextmanager
def pebble(work: Path, dns_server: str) -> Iterator[Pebble]:
    """Pebble, Let's Encrypt's ACME test CA (Debian's `pebble`), on loopback, validating
    DNS-01 by asking `dns_server` ("ip:port", an authoritative PowerDNS) directly."""
    import json

    work.mkdir(parents=True, exist_ok=True)
    cert, key = _self_signed(work)
    port, mgmt = free_port(), free_port()
    config = work / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "managementListenAddress": f"127.0.0.1:{mgmt}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": free_port(),
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    env = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",  # validate at once (no random 0-15 s wait)
        "PEBBLE_WFE_NONCEREJECT": "0",  # no deliberately rejected nonces
    }
    log = work / "pebble.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["pebble", "-config", str(config), "-dnsserver", dns_server],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 15
        directory = f"https://127.0.0.1:{port}/dir"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pebble exited with {proc.returncode}: {log.read_text()}")
            try:
                httpx.get(directory, verify=ssl.create_default_context(cafile=str(cert)), timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("pebble did not answer") from None
                time.sleep(0.1)
        yield Pebble(directory, cert, f"https://127.0.0.1:{mgmt}", proc.pid, log)
    finally:
        _stop(proc)
